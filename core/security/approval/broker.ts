/**
 * Holds approval requests until a person answers or the deadline passes. A pending request is
 * a paused call, so every path ends in an answer: decided, timed out (deny) or broker closed
 * (deny). Nothing is allowed by silence.
 *
 * No approver attached → immediate deny ("no approver connected"). Waiting out the deadline
 * for a person who cannot be asked would only stall the agent and then deny anyway; headless
 * runs that should not ask use the `autonomous` mode, which never reaches the broker. An
 * approver that detaches while requests are pending does not deny them: a UI that reloads can
 * call pending() and still answer before the deadline.
 */
import { allow, type Decision, deny } from "../decision.js";
import {
  APPROVAL_DECISIONS,
  type ApprovalAnswer,
  type ApprovalDecision,
  type ApprovalRequest,
  ApprovalRequestError,
  approvalDecisionSchema,
  parseApprovalRequest,
} from "./request.js";

export interface ApprovalListener {
  /** A new request to show a person. */
  requested(request: ApprovalRequest): void;
  /** The request is no longer pending (answered, timed out or closed): hide it. */
  resolved?(id: string, answer: ApprovalAnswer): void;
}

export interface ApprovalOutcome {
  readonly request: ApprovalRequest;
  readonly answer: ApprovalAnswer;
  /** The approval layer's decision for this call (allow for every allow_* answer). */
  readonly decision: Decision;
}

export class ApprovalBrokerError extends Error {
  override readonly name = "ApprovalBrokerError";
}

interface Waiting {
  readonly request: ApprovalRequest;
  readonly resolve: (o: ApprovalOutcome) => void;
  readonly timer: NodeJS.Timeout;
}

/** How many finished ids are remembered so a late answer gets a precise error. */
const REMEMBERED = 1024;

export class ApprovalBroker {
  private readonly waiting = new Map<string, Waiting>();
  private readonly finished = new Map<string, string>();
  private readonly listeners = new Set<ApprovalListener>();
  private readonly now: () => number;
  private closed = false;

  constructor(opts: { now?: () => number } = {}) {
    this.now = opts.now ?? Date.now;
  }

  /** Connects an approver; returns the function that disconnects it. */
  attach(listener: ApprovalListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  get approverConnected(): boolean {
    return this.listeners.size > 0;
  }

  /** Resolves when a person decides, at the deadline (deny), or at once if nobody can be asked. */
  request(input: ApprovalRequest): Promise<ApprovalOutcome> {
    const request = parseApprovalRequest(input);
    if (this.waiting.has(request.id) || this.finished.has(request.id)) {
      throw new ApprovalRequestError(`approval request "${request.id}" was already submitted`);
    }
    if (this.closed) {
      return Promise.resolve(this.autoDeny(request, "broker-closed", "approval broker is closed"));
    }
    if (this.listeners.size === 0) {
      return Promise.resolve(this.autoDeny(request, "no-approver", "no approver connected"));
    }
    const waitMs = request.deadline - this.now();
    const timeoutReason = `approval timed out after ${request.deadline - request.createdAt} ms`;
    if (waitMs <= 0) return Promise.resolve(this.autoDeny(request, "timeout", timeoutReason));
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.finish(
          request.id,
          "timed out",
          {
            decision: "deny",
            decidedBy: "timeout",
            decidedAt: this.now(),
          },
          deny("approval", timeoutReason),
        );
      }, waitMs);
      this.waiting.set(request.id, { request, resolve, timer });
      for (const l of this.listeners) {
        try {
          l.requested(request);
        } catch {
          // A broken UI cannot approve anything; the request still ends at its deadline.
        }
      }
    });
  }

  /** A person's answer. Unknown, answered or expired ids are errors, never silently ignored. */
  decide(id: string, decision: ApprovalDecision, decidedBy: string): ApprovalOutcome {
    if (!approvalDecisionSchema.safeParse(decision).success) {
      throw new ApprovalBrokerError(
        `unknown approval decision ${JSON.stringify(decision)}; expected one of ${APPROVAL_DECISIONS.join(", ")}`,
      );
    }
    if (typeof decidedBy !== "string" || decidedBy.length === 0) {
      throw new ApprovalBrokerError("decidedBy must name who decided");
    }
    const w = this.waiting.get(id);
    if (!w) {
      const how = this.finished.get(id);
      throw new ApprovalBrokerError(
        how ? `approval request "${id}" ${how}` : `unknown approval request "${id}"`,
      );
    }
    const answer: ApprovalAnswer = { decision, decidedBy, decidedAt: this.now() };
    const verdict =
      decision === "deny"
        ? deny("approval", `denied by ${decidedBy}`)
        : allow("approval", `${decision} by ${decidedBy}`);
    return this.finish(id, `was already decided (${decision} by ${decidedBy})`, answer, verdict);
  }

  pending(): ApprovalRequest[] {
    return [...this.waiting.values()].map((w) => w.request);
  }

  /** Denies everything still pending; later requests are denied at once. */
  close(): void {
    this.closed = true;
    for (const id of [...this.waiting.keys()]) {
      this.finish(
        id,
        "was closed unanswered",
        { decision: "deny", decidedBy: "broker-closed", decidedAt: this.now() },
        deny("approval", "approval broker is closed"),
      );
    }
  }

  private finish(
    id: string,
    how: string,
    answer: ApprovalAnswer,
    decision: Decision,
  ): ApprovalOutcome {
    const w = this.waiting.get(id)!;
    clearTimeout(w.timer);
    this.waiting.delete(id);
    this.remember(id, how);
    const outcome: ApprovalOutcome = { request: w.request, answer, decision };
    w.resolve(outcome);
    for (const l of this.listeners) {
      try {
        l.resolved?.(id, answer);
      } catch {
        // Hiding a prompt is cosmetic; the outcome is already decided.
      }
    }
    return outcome;
  }

  private autoDeny(request: ApprovalRequest, by: string, reason: string): ApprovalOutcome {
    this.remember(request.id, `was denied at once (${reason})`);
    return {
      request,
      answer: { decision: "deny", decidedBy: by, decidedAt: this.now() },
      decision: deny("approval", reason),
    };
  }

  private remember(id: string, how: string): void {
    this.finished.set(id, how);
    if (this.finished.size > REMEMBERED) {
      const oldest = this.finished.keys().next().value as string;
      this.finished.delete(oldest);
    }
  }
}
