/**
 * The NATS side of approvals. A sidecar whose call needs a person sends `approval.request` to
 * `approval.v1.request.<session>` and waits for the reply (sidecar/enforce/approvals-over-bus.ts).
 * The bridge, on the leader only, turns each request into an Approval object and holds the
 * message; the Approval reconciler answers it when someone sets spec.decision (kubectl edit)
 * and drops it at the deadline. A pre-approval (an Approval created with a decision for the
 * same session, capsule and action) answers at once.
 *
 * Everything it cannot check is a deny: an unknown or ambiguous session, a capsule that is not
 * in the session, an action kind the Approval kind cannot hold, a request it could not record.
 * Nobody answering (no leader, NATS down) is a deny on the sidecar's side.
 */
import { createHash } from "node:crypto";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { decode, encode, expectKind } from "../../core/protocol/envelope.js";
import { fromSubjectToken } from "../../core/protocol/topics.js";
import { ACTION_KINDS, type ActionKind } from "../../core/security/approval/action.js";
import type { ApprovalDecision } from "../../core/security/approval/request.js";
import type { AgentSession } from "../api/agentsession.js";
import type { Approval } from "../api/approval.js";
import type { Client } from "../runtime/client.js";
import { keyOf } from "../runtime/keys.js";
import type { KubeObject } from "../runtime/rest.js";
import type { NatsLink } from "../session/nats-link.js";
import { AgentSessions, Approvals } from "../session/resources.js";
import {
  type ApprovalQuestion,
  approvalName,
  desiredApproval,
  findPreApproval,
} from "./desired.js";

export const REQUEST_SUBJECTS = "approval.v1.request.*";
/** One answer per request even while two replicas briefly both think they lead. */
export const QUEUE_GROUP = "astrid-operator";

export interface ApprovalBridgeOptions {
  link: NatsLink;
  client: Client;
  log: Logger;
  /** Requests held at once; more are denied (a flood must not grow the operator's memory). */
  maxPending?: number;
  /** Delay between attempts to reach NATS while it is down, ms. Default 2000. */
  retryMs?: number;
  /** Called with an Approval's key when its request reaches its deadline. */
  onExpired?: (key: string) => void;
  now?: () => number;
}

interface Held {
  msg: Msg;
  requestId: string;
  session: string;
  principal: string;
  timer: NodeJS.Timeout;
}

type SessionObject = AgentSession & KubeObject;
type ApprovalObject = Approval & KubeObject;

export class ApprovalBridge {
  private readonly held = new Map<string, Held>();
  private sub: Subscription | undefined;
  private running = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly o: ApprovalBridgeOptions) {}

  /** Subscribes (retrying while NATS is down) until stop(). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    await this.sub?.drain().catch(() => undefined);
    this.sub = undefined;
    // Held requests go unanswered: the sidecar's own timer denies them; a new leader cannot
    // answer them (it has not got the reply subject), so the person will be asked again.
    for (const h of this.held.values()) clearTimeout(h.timer);
    this.held.clear();
  }

  /** Whether a request for this Approval key is waiting for an answer. */
  holds(key: string): boolean {
    return this.held.has(key);
  }

  /** Answers the held request of Approval `key`, if any; true when one was answered. */
  answer(key: string, decision: ApprovalDecision, decidedBy: string, note?: string): boolean {
    const h = this.held.get(key);
    if (!h) return false;
    this.held.delete(key);
    clearTimeout(h.timer);
    this.reply(h.msg, h, decision, decidedBy, note);
    this.o.log.info(
      { approval: key, session: h.session, requestId: h.requestId, decision, decidedBy },
      "approval decided",
    );
    return true;
  }

  private async run(): Promise<void> {
    while (this.running) {
      let nc: NatsConnection;
      try {
        nc = await this.o.link.get();
      } catch (err) {
        this.o.log.warn(
          { err: (err as Error).message },
          "approval bridge cannot reach NATS; approvals are denied by the sidecars' timers meanwhile",
        );
        await new Promise<void>((r) => {
          const t = setTimeout(r, this.o.retryMs ?? 2000);
          this.wake = () => {
            clearTimeout(t);
            r();
          };
        });
        continue;
      }
      this.sub = nc.subscribe(REQUEST_SUBJECTS, {
        queue: QUEUE_GROUP,
        callback: (err, msg) => {
          if (err) return;
          void this.onRequest(msg).catch((e: Error) =>
            this.o.log.error({ err: e.message, subject: msg.subject }, "approval request failed"),
          );
        },
      });
      this.o.log.info({ subject: REQUEST_SUBJECTS }, "approval bridge listening");
      // Until the client gives up on the connection (never, with endless reconnects) or stop().
      await Promise.race([
        nc.closed(),
        new Promise<void>((r) => {
          this.wake = r;
        }),
      ]);
    }
  }

  private reply(
    msg: Msg,
    meta: { session: string; principal: string; requestId: string },
    decision: ApprovalDecision,
    decidedBy: string,
    note?: string,
  ): void {
    const body = { requestId: meta.requestId, decision, decidedBy, ...(note ? { note } : {}) };
    msg.respond(
      encode("approval.decision", body, {
        session: meta.session,
        principal: meta.principal,
        capsule: "operator",
      }),
    );
  }

  private async onRequest(msg: Msg): Promise<void> {
    const now = this.o.now?.() ?? Date.now();
    const subjectSession = fromSubjectToken(msg.subject.split(".").pop() ?? "");
    let env: ReturnType<typeof expectKind<"approval.request">>;
    try {
      env = expectKind(decode(msg.data, { now }), "approval.request");
    } catch (err) {
      msg.respond(
        encode(
          "error",
          { code: "invalid", message: (err as Error).message.slice(0, 500) || "invalid request" },
          { session: "unknown", principal: "operator", capsule: "operator" },
        ),
      );
      return;
    }
    const meta = { session: env.session, principal: env.principal, requestId: env.body.requestId };
    const deny = (why: string) => {
      this.o.log.warn({ session: env.session, requestId: meta.requestId, why }, "approval denied");
      this.reply(msg, meta, "deny", "astrid-operator", why.slice(0, 500));
    };
    // The subject is what NATS permissions bound the sender to; an envelope naming another
    // session would ask on that session's behalf.
    if (env.session !== subjectSession)
      return deny(`the request names session ${env.session} but was sent for ${subjectSession}`);
    const sessions = this.o.client
      .list<SessionObject>(AgentSessions)
      .filter((s) => s.metadata.name === env.session);
    if (sessions.length === 0) return deny(`no AgentSession named ${env.session}`);
    if (sessions.length > 1)
      return deny(
        `AgentSession ${env.session} exists in several namespaces (${sessions.map((s) => s.metadata.namespace).join(", ")}); session names must be unique across the watched namespaces`,
      );
    const session = sessions[0] as SessionObject;
    if (session.metadata.deletionTimestamp)
      return deny(`AgentSession ${env.session} is being deleted`);
    if (!session.spec.capsules.includes(env.capsule))
      return deny(`capsule ${env.capsule} is not one of session ${env.session}'s capsules`);
    const kind = env.body.action.kind;
    if (!(ACTION_KINDS as readonly string[]).includes(kind))
      return deny(`action kind ${kind} cannot be approved through an Approval object`);
    const namespace = session.metadata.namespace ?? "";
    const q: ApprovalQuestion = {
      namespace,
      session: env.session,
      sessionUid: String(session.metadata.uid ?? ""),
      capsule: env.capsule,
      principal: env.principal,
      requestId: env.body.requestId,
      action: {
        kind: kind as ActionKind,
        target: env.body.action.target,
        argsHash: env.body.action.argsHash ?? createHash("sha256").update("").digest("hex"),
      },
      reason: env.body.reason.slice(0, 4096),
      deadline: env.deadline ?? now,
    };
    const approvals = this.o.client.list(Approvals, namespace);
    const pre = findPreApproval(approvals, q);
    if (pre?.spec.decision) {
      this.o.log.info(
        {
          approval: `${namespace}/${pre.metadata.name}`,
          session: q.session,
          requestId: q.requestId,
          decision: pre.spec.decision,
        },
        "answered by a pre-approval",
      );
      this.reply(msg, meta, pre.spec.decision, pre.spec.decidedBy ?? "pre-approval");
      return;
    }
    const name = approvalName(q.session, q.requestId);
    const key = keyOf(namespace, name);
    if (this.held.has(key)) return deny(`request ${q.requestId} is already waiting`);
    if (this.held.size >= (this.o.maxPending ?? 1000))
      return deny("too many approvals are waiting; try again later");
    const timer = setTimeout(
      () => {
        if (this.held.delete(key)) this.o.onExpired?.(key);
      },
      Math.max(0, q.deadline - now),
    );
    this.held.set(key, {
      msg,
      requestId: q.requestId,
      session: q.session,
      principal: q.principal,
      timer,
    });
    let applied: KubeObject;
    try {
      applied = await this.o.client.apply(Approvals, desiredApproval(q));
    } catch (err) {
      if (!this.held.delete(key)) return;
      clearTimeout(timer);
      deny(`the Approval ${key} could not be created: ${(err as Error).message}`);
      return;
    }
    this.o.log.info(
      { approval: key, session: q.session, capsule: q.capsule, action: q.action },
      "approval requested",
    );
    // A request sent again after it was decided finds its decision already there; no event
    // would come for an object that did not change.
    const spec = (applied as ApprovalObject).spec;
    if (spec?.decision) this.answer(key, spec.decision, spec.decidedBy ?? "unknown");
  }
}
