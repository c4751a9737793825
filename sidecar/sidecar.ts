/**
 * The sidecar: the only door between one capsule and the world. It subscribes to the capsule's
 * exports (IPC ACL checked), and for every request decodes it (size, schema, deadline), checks
 * the caller's capability token, reserves budget, asks for approval when the security mode
 * says so, runs the engine with the enforced host ABI, settles the budget and replies — every
 * decision written to the audit chain before the next step runs.
 */
import type { AuditChain } from "../core/audit/index.js";
import type { Bus, BusMessage, Subscription } from "../core/bus/bus.js";
import type { Manifest } from "../core/manifest/index.js";
import {
  decode,
  type Envelope,
  encode,
  isKnown,
  ProtocolError,
} from "../core/protocol/envelope.js";
import type { ErrorReply, LlmChatRequest, ToolExecuteRequest } from "../core/protocol/messages.js";
import { subjects } from "../core/protocol/topics.js";
import type { IpcAcl } from "../core/security/acl/ipc-acl.js";
import { argsHash } from "../core/security/approval/action.js";
import type { Approvals } from "../core/security/approval/approvals.js";
import { newApprovalRequest } from "../core/security/approval/request.js";
import type { BudgetLedger, Reservation } from "../core/security/budget/ledger.js";
import { allow, type Decision, deny, type Layer } from "../core/security/decision.js";
import type { ManifestGate } from "../core/security/gate/gate.js";
import { approvalReason, needsApproval, type SecurityMode } from "../core/security/modes/modes.js";
import type { TokenVerifier } from "../core/security/tokens/verifier.js";
import type { CallContext, LogLevel } from "./abi/host.js";
import { CapsuleBus, IpcDeniedError } from "./enforce/capsule-bus.js";
import { DecisionLog, type DecisionObserver } from "./enforce/decision-log.js";
import { EnforcedHost } from "./enforce/host.js";
import type { KvStore } from "./enforce/kv.js";
import { CapsuleLayers } from "./enforce/layers.js";
import type { CapsuleExport, Reply } from "./engine/exports.js";

/** What the sidecar reports to metrics; every method optional. */
export interface SidecarObserver extends DecisionObserver {
  callStarted?(kind: string): (outcome: "ok" | "error" | "denied") => void;
  approval?(outcome: string): void;
  budget?(session: string, ledger: BudgetLedger): void;
}

export interface SidecarOptions {
  readonly capsule: string;
  readonly manifest: Manifest;
  readonly bus: Bus;
  readonly audit: AuditChain;
  readonly acl: IpcAcl;
  readonly gate: ManifestGate;
  /** Verifies callers' tokens and tokens presented for host calls; undefined = none trusted. */
  readonly tokens: TokenVerifier | undefined;
  /** Refuse requests that carry no valid capability token for the export (cluster default). */
  readonly requireCallerToken: boolean;
  /** A session-bound sidecar (an AgentSession's own) refuses requests of other sessions. */
  readonly session?: string;
  readonly approvals: Approvals;
  readonly mode: SecurityMode;
  readonly yes: boolean;
  readonly workspace: string;
  readonly home: string;
  readonly approvalTimeoutMs: number;
  /** The session's budget ledger, opened on first use; undefined = no budget configured. */
  readonly ledger: (session: string) => Promise<BudgetLedger | undefined>;
  readonly kv: KvStore;
  readonly config: Readonly<Record<string, string>>;
  readonly secrets: Readonly<Record<string, string>>;
  readonly exports: readonly CapsuleExport[];
  readonly logger: (level: LogLevel, message: string, fields: Record<string, unknown>) => void;
  readonly observer?: SidecarObserver;
}

/** Header a caller puts its capability token in (tool calls may also use the body's `token`). */
export const TOKEN_HEADER = "astrid-token";

class Refused extends Error {
  constructor(
    readonly reply: ErrorReply,
    readonly outcome: "denied" | "error",
  ) {
    super(reply.message);
  }
}

export class Sidecar {
  readonly log: DecisionLog;
  private readonly capsuleBus: CapsuleBus;
  private readonly layers: CapsuleLayers;
  private readonly subs: Subscription[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly startedAt = Date.now();
  private state: "starting" | "ready" | "draining" | "stopped" = "starting";

  private constructor(private readonly o: SidecarOptions) {
    this.log = new DecisionLog(o.audit, o.observer);
    this.capsuleBus = new CapsuleBus(o.bus, o.acl, this.log);
    this.layers = new CapsuleLayers({
      log: this.log,
      approvals: o.approvals,
      mode: o.mode,
      yes: o.yes,
      workspace: o.workspace,
      approvalTimeoutMs: o.approvalTimeoutMs,
    });
  }

  static async start(o: SidecarOptions): Promise<Sidecar> {
    const s = new Sidecar(o);
    const who = s.self();
    await s.log.note(who, "lifecycle", "capsule.start", o.capsule, `mode ${o.mode}`);
    for (const exp of o.exports) {
      // The sidecar subscribes on the capsule's behalf, inside the capsule's ACL; a queue
      // group lets several replicas of one capsule share the work.
      // An export the manifest does not let the capsule receive (an MCP server offering more
      // tools than its capsule declares) is left unserved: the denial is audited, not fatal.
      try {
        const sub = await s.capsuleBus.subscribe(
          who,
          exp.subject,
          (msg) => s.track(s.serve(exp, msg)),
          `capsule.${o.capsule}`,
        );
        s.subs.push(sub);
      } catch (err) {
        if (!(err instanceof IpcDeniedError)) throw err;
        o.logger("warn", "export not served: outside the capsule's ipc_subscribe", {
          subject: exp.subject,
          reason: err.message,
        });
      }
    }
    s.subs.push(o.bus.subscribe(subjects.capsuleHealth(o.capsule), (msg) => s.answerHealth(msg)));
    // Ready means the server has our subscriptions: without this round trip a request sent
    // right after start can meet "no responders" on NATS.
    await o.bus.flush();
    s.state = "ready";
    return s;
  }

  get ready(): boolean {
    return this.state === "ready";
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Stop taking requests, let the ones in flight finish, flush the audit chain. */
  async drain(): Promise<void> {
    if (this.state === "stopped") return;
    this.state = "draining";
    await Promise.all(this.subs.map((s) => s.drain().catch(() => undefined)));
    await Promise.all([...this.inFlight]);
    await this.log
      .note(this.self(), "lifecycle", "capsule.stop", this.o.capsule, "drained")
      .catch(() => undefined);
    this.state = "stopped";
  }

  private self() {
    return { session: "-", principal: `capsule:${this.o.capsule}`, capsule: this.o.capsule };
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private answerHealth(msg: BusMessage): void {
    if (!msg.reply) return;
    const body = {
      ready: this.ready,
      uptimeMs: Date.now() - this.startedAt,
      inFlight: this.inFlight.size,
    };
    const meta = { session: "-", principal: `capsule:${this.o.capsule}`, capsule: this.o.capsule };
    msg.respond(encode("capsule.health", body, { ...meta, session: "health" }));
  }

  private reply(
    msg: BusMessage,
    ctxMeta: { session: string; principal: string },
    r: Reply | ErrorReply,
  ) {
    if (!msg.reply) return;
    const meta = {
      session: ctxMeta.session,
      principal: ctxMeta.principal,
      capsule: this.o.capsule,
    };
    let wire: Uint8Array;
    try {
      wire =
        "kind" in r && typeof r.kind === "string" && "body" in r
          ? encode(r.kind, r.body as never, meta)
          : encode("error", r as ErrorReply, meta);
    } catch (err) {
      // A reply that does not fit the protocol (too large, malformed engine output) becomes a
      // clear error rather than silence that leaves the caller to time out.
      const e = err as ProtocolError;
      wire = encode(
        "error",
        {
          code: e.code === "too_large" ? "too_large" : "internal",
          message: `reply refused: ${e.message}`,
        },
        meta,
      );
    }
    this.capsuleBus.respond(msg, wire);
  }

  private async serve(exp: CapsuleExport, msg: BusMessage): Promise<void> {
    const end = this.o.observer?.callStarted?.(exp.kind);
    let env: Envelope;
    try {
      const decoded = decode(msg.data);
      if (!isKnown(decoded) || decoded.kind !== exp.accepts) {
        throw new ProtocolError(
          "invalid",
          `${exp.subject} accepts ${exp.accepts}, got ${decoded.kind}`,
        );
      }
      env = decoded;
    } catch (err) {
      const e = err as ProtocolError;
      const code =
        e.code === "too_large" ? "too_large" : e.code === "expired" ? "timeout" : "invalid";
      this.o.logger("warn", "refused malformed request", {
        subject: msg.subject,
        error: e.message,
      });
      this.reply(msg, { session: "-", principal: "-" }, { code, message: e.message });
      end?.("error");
      return;
    }
    const ctx: CallContext = {
      callId: (env.body as { callId?: string }).callId ?? env.id,
      session: env.session,
      principal: env.principal,
      capsule: this.o.capsule,
      token: msg.headers[TOKEN_HEADER] ?? (env.body as ToolExecuteRequest).token,
      deadline: env.deadline ?? Date.now() + 30_000,
    };
    let reservation: Reservation | undefined;
    let ledger: BudgetLedger | undefined;
    try {
      await this.checkCaller(exp, env, ctx);
      ({ ledger, reservation } = await this.reserve(exp, env, ctx));
      await this.askIfNeeded(exp, env, ctx);
      const host = new EnforcedHost(
        {
          layers: this.layers,
          gate: this.o.gate,
          bus: this.capsuleBus,
          log: this.log,
          kv: this.o.kv,
          kvBuckets: this.o.manifest.capabilities.kv,
          config: this.o.config,
          secrets: this.o.secrets,
          workspace: this.o.workspace,
          home: this.o.home,
          logger: this.o.logger,
          ...this.streamOf(exp, env),
        },
        ctx,
      );
      let result: Reply;
      try {
        result = await exp.call(env, ctx, host);
      } finally {
        host.dispose();
      }
      if (ledger && reservation) {
        const usage = result.kind === "llm.chat.response" ? result.body.usage : undefined;
        await ledger.settle(reservation, {
          tokens: usage ? usage.inputTokens + usage.outputTokens : 0,
          microUsd: usage?.costMicroUsd ?? 0,
        });
        this.o.observer?.budget?.(ctx.session, ledger);
        reservation = undefined;
      }
      // The decisions that let this call act are durable already; the outcome note is a record,
      // not an authorisation, so the reply does not wait for its fsync (drain still does).
      this.noteLater(ctx, `${exp.kind}.done`, exp.subject, this.summary(result));
      this.reply(msg, ctx, result);
      end?.("ok");
    } catch (err) {
      if (ledger && reservation) await ledger.refund(reservation).catch(() => undefined);
      if (err instanceof Refused) {
        this.reply(msg, ctx, err.reply);
        end?.(err.outcome);
        return;
      }
      // A guest that let a host denial escape reports it as its own failure; the caller still
      // learns it was a denial (guestCode), not an internal fault.
      const e = err as Error & { code?: string; guestCode?: string };
      const code = mapCode(e.guestCode ?? e.code);
      this.o.logger("warn", "call failed", { subject: msg.subject, error: e.message });
      this.noteLater(ctx, `${exp.kind}.failed`, exp.subject, e.message);
      this.reply(msg, ctx, { code, message: e.message || "call failed" });
      end?.("error");
    }
  }

  /**
   * Where a model call's deltas go: the inbox its caller named. The raw bus publish is handed
   * to the host for that one subject only; EnforcedHost.streamDelta checks it and audits it.
   */
  private streamOf(exp: CapsuleExport, env: Envelope) {
    const subject = exp.kind === "llm" ? (env.body as LlmChatRequest).stream : undefined;
    if (subject === undefined) return {};
    const bus = this.o.bus;
    return { stream: { subject, publish: (s: string, d: Uint8Array) => bus.publish(s, d) } };
  }

  private noteLater(ctx: CallContext, action: string, target: string, reason: string): void {
    this.track(
      this.log.note(ctx, "lifecycle", action, target, reason).catch((err: Error) => {
        this.o.logger("error", "audit note failed", { action, error: err.message });
      }),
    );
  }

  private summary(r: Reply): string {
    switch (r.kind) {
      case "tool.result":
        return r.body.isError ? "tool reported an error" : "ok";
      case "llm.chat.response":
        return `stop ${r.body.stopReason}, ${r.body.usage.inputTokens}+${r.body.usage.outputTokens} tokens`;
      default:
        return "ok";
    }
  }

  /** Layer 4 for the call itself: does the caller hold a grant for this export? */
  private async checkCaller(exp: CapsuleExport, env: Envelope, ctx: CallContext) {
    if (this.o.session !== undefined && ctx.session !== this.o.session) {
      const d = await this.log.record(
        ctx,
        deny("acl", `this sidecar serves session "${this.o.session}" only`),
        `${exp.kind}.call`,
        exp.subject,
      );
      throw refused(d);
    }
    const tool = exp.kind === "tool" ? (env.body as ToolExecuteRequest).tool : undefined;
    const resource = tool !== undefined ? `tool:${tool}` : `topic:${exp.subject}`;
    const permission = tool !== undefined ? "execute" : "publish";
    let d: Decision;
    if (ctx.token === undefined) {
      d = this.o.requireCallerToken
        ? deny("token", `no capability token presented for ${resource}`)
        : allow("token", "caller tokens not required by this sidecar's configuration");
    } else if (!this.o.tokens) {
      d = deny("token", "a capability token was presented but this sidecar trusts no issuer keys");
    } else {
      d = await this.o.tokens.verify(ctx.token, {
        principal: ctx.principal,
        resource,
        permission,
        session: ctx.session,
      });
    }
    const logged = await this.log.record(ctx, d, `${exp.kind}.call`, resource);
    if (!logged.allowed) throw refused(logged);
  }

  /** Layer 5a: reserve the worst case before the call; settle or refund after. */
  private async reserve(exp: CapsuleExport, env: Envelope, ctx: CallContext) {
    if (exp.kind !== "llm") return { ledger: undefined, reservation: undefined };
    const ledger = await this.o.ledger(ctx.session);
    if (!ledger) {
      const d = await this.log.record(
        ctx,
        deny("budget", "no budget is configured for this session; model calls are refused"),
        "llm.reserve",
        exp.subject,
      );
      throw refused(d, "budget");
    }
    // The worst case of one call: its token ceiling, and the per-call money limit (the price is
    // the provider's to report afterwards). A session that cannot afford a worst-case call stops.
    const snap = ledger.snapshot();
    const body = env.body as LlmChatRequest;
    const want = {
      tokens: Math.min(body.maxTokens ?? snap.limitTokensPerCall, snap.limitTokensPerCall),
      microUsd: snap.limitMicroUsdPerCall,
      operation: exp.subject,
    };
    const r = await ledger.reserve(want);
    const d = await this.log.record(ctx, r.decision, "llm.reserve", exp.subject);
    if (!r.ok || !d.allowed) {
      if (r.ok) await ledger.refund(r.reservation);
      throw refused(d.allowed ? r.decision : d, "budget");
    }
    this.o.observer?.budget?.(ctx.session, ledger);
    return { ledger, reservation: r.reservation };
  }

  /** Layer 5b: tool calls ask a person when the mode says so (grants answer first). */
  private async askIfNeeded(exp: CapsuleExport, env: Envelope, ctx: CallContext) {
    if (exp.kind !== "tool") return;
    const body = env.body as ToolExecuteRequest;
    if (!needsApproval(this.o.mode, { kind: "tool" }, { yes: this.o.yes })) return;
    const request = newApprovalRequest({
      session: ctx.session,
      principal: ctx.principal,
      capsule: this.o.capsule,
      action: { kind: "tool", target: body.tool, argsHash: argsHash(body.arguments) },
      reason: approvalReason(this.o.mode, { kind: "tool" }),
      workspace: this.o.workspace,
      timeoutMs: Math.max(1, Math.min(this.o.approvalTimeoutMs, ctx.deadline - Date.now())),
    });
    const { decision, answer } = await this.o.approvals.authorize(request);
    this.o.observer?.approval?.(
      answer ? (answer.decidedBy === "timeout" ? "timeout" : answer.decision) : "grant",
    );
    const d = await this.log.record(ctx, decision, "approval.decided", body.tool, body.arguments);
    if (!d.allowed) throw refused(d);
  }
}

function refused(d: Decision, code: ErrorReply["code"] = "denied"): Refused {
  const layer: Layer = d.layer;
  const message = d.allowed ? "denied" : `${layer}: ${d.reason}`;
  return new Refused({ code, message, layer }, "denied");
}

function mapCode(code: string | undefined): ErrorReply["code"] {
  switch (code) {
    case "denied":
    case "invalid":
    case "not_found":
    case "timeout":
    case "too_large":
    case "unavailable":
    case "budget":
      return code;
    default:
      return "internal";
  }
}
