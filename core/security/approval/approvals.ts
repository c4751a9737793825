/**
 * The approval layer as the gate sees it: an existing grant answers first; otherwise a person
 * is asked through the broker and what they grant is stored. Whether an action needs approval
 * at all is the security mode's question (core/security/modes), asked before this.
 */
import { allow, type Decision, deny } from "../decision.js";
import type { ApprovalBroker } from "./broker.js";
import type { ApprovalAnswer, ApprovalRequest } from "./request.js";
import type { ApprovalStore, Grant } from "./store.js";

export interface AuthorizeResult {
  readonly decision: Decision;
  /** The person's (or timeout's) answer; null when an existing grant answered. */
  readonly answer: ApprovalAnswer | null;
  /** The grant that answered, or the one this answer created; null if none. */
  readonly grant: Grant | null;
}

export class Approvals {
  constructor(
    private readonly store: ApprovalStore,
    private readonly broker: ApprovalBroker,
  ) {}

  async authorize(request: ApprovalRequest): Promise<AuthorizeResult> {
    const ctx = {
      session: request.session,
      principal: request.principal,
      capsule: request.capsule,
      ...(request.workspace !== undefined ? { workspace: request.workspace } : {}),
    };
    const existing = await this.store.lookup(request.action, ctx);
    if (existing) {
      return {
        decision: allow(
          "approval",
          `${existing.scope} grant by ${existing.grantedBy} (request ${existing.requestId})`,
        ),
        answer: null,
        grant: existing,
      };
    }
    const outcome = await this.broker.request(request);
    if (!outcome.decision.allowed)
      return { decision: outcome.decision, answer: outcome.answer, grant: null };
    try {
      const grant = await this.store.record(request, outcome.answer);
      return { decision: outcome.decision, answer: outcome.answer, grant };
    } catch (e) {
      // The person allowed it, but the grant they asked for could not be kept (no workspace,
      // token minting or disk failed). Allowing anyway would leave no trace of a lasting grant
      // they believe exists; deny and say why so they can answer allow_once instead.
      const why = e instanceof Error ? e.message : String(e);
      return {
        decision: deny("approval", `${outcome.answer.decision} could not be recorded: ${why}`),
        answer: outcome.answer,
        grant: null,
      };
    }
  }
}
