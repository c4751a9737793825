/**
 * One session's running agent: every installed capsule started under its own sidecar, in
 * dependency order, on a bus of the session's own (so sessions cannot see each other's
 * traffic), bound to the session (its mode, budget, audit chains under sessions/<id>/audit/).
 * A prompt is a `session.prompt` request to the orchestrator; events and approval requests of
 * the session are handed to the caller while it runs.
 */
import type { KeyObject } from "node:crypto";
import path from "node:path";
import type { z } from "zod";
import type { Bus, BusMessage } from "../../core/bus/bus.js";
import { EmbeddedBus } from "../../core/bus/embedded.js";
import {
  type Bindings,
  type Manifest,
  resolveGraph,
  type StartPlan,
} from "../../core/manifest/index.js";
import { decode, encode, expectKind } from "../../core/protocol/envelope.js";
import type { ChatMessage, SessionEvent, SessionResponse } from "../../core/protocol/messages.js";
import { subjects } from "../../core/protocol/topics.js";
import type { BudgetLimitsInput } from "../../core/security/budget/limits.js";
import type { SecurityMode } from "../../core/security/modes/modes.js";
import type { IssuerKey } from "../../core/security/tokens/keys.js";
import { mintToken } from "../../core/security/tokens/mint.js";
import type { TokenVerifier } from "../../core/security/tokens/verifier.js";
import type { LogLevel } from "../../sidecar/abi/host.js";
import { type AssembledSidecar, assembleSidecar } from "../../sidecar/assemble.js";
import type { KvStore } from "../../sidecar/enforce/kv.js";

export interface InstalledCapsule {
  readonly dir: string;
  readonly manifest: Manifest;
}

export interface SessionRuntimeOptions {
  readonly session: string;
  readonly principal: string;
  readonly sessionDir: string;
  readonly workspace: string;
  readonly home: string;
  readonly mode: SecurityMode;
  readonly yes: boolean;
  readonly capsules: readonly InstalledCapsule[];
  readonly bindings: Bindings;
  /** The capsule that serves `session.v1.prompt.*`. */
  readonly orchestrator: string;
  readonly identity: { readonly key: KeyObject; readonly keyId: string };
  readonly issuer: IssuerKey;
  readonly tokens: TokenVerifier;
  readonly budget?: BudgetLimitsInput;
  readonly env: Readonly<Record<string, string>>;
  /** Settings every capsule of the session can read with config(), e.g. `tool_capsules`. */
  readonly extraConfig?: Readonly<Record<string, string>>;
  readonly approvalTimeoutMs: number;
  /** Lasting approval grants (workspace, always), shared by every session of the home. */
  readonly grantsFile?: string;
  /**
   * Each capsule's kv store, shared by the sessions of the home (config.toml `kv.persist`).
   * Absent: every sidecar gets a new in-memory store, gone with the session.
   */
  readonly kv?: (capsule: string) => Promise<KvStore>;
  readonly logger: (level: LogLevel, message: string, fields: Record<string, unknown>) => void;
}

export type SessionEventBody = z.infer<typeof SessionEvent>;
export type SessionResponseBody = z.infer<typeof SessionResponse>;

export interface ApprovalPrompt {
  readonly requestId: string;
  readonly capsule: string;
  readonly kind: string;
  readonly target: string;
  readonly reason: string;
}

export type ApprovalAnswer =
  | "allow_once"
  | "allow_session"
  | "allow_workspace"
  | "allow_always"
  | "deny";

export interface PromptHandlers {
  readonly onEvent: (e: SessionEventBody) => void;
  /** Ask the person; resolve with their answer. Absent: approvals are denied (no approver). */
  readonly onApproval?: (a: ApprovalPrompt) => Promise<ApprovalAnswer>;
}

export class SessionRuntime {
  private constructor(
    private readonly o: SessionRuntimeOptions,
    readonly bus: Bus,
    private readonly sidecars: readonly AssembledSidecar[],
    /** Start order, for status and `capsule tree`. */
    readonly order: readonly string[],
  ) {}

  static async start(o: SessionRuntimeOptions): Promise<SessionRuntime> {
    const plan = resolveGraph(
      o.capsules.map((c) => c.manifest),
      o.bindings,
    );
    if (!plan.order.includes(o.orchestrator)) {
      throw new Error(
        `orchestrator "${o.orchestrator}" is not installed; installed: ${plan.order.join(", ")}`,
      );
    }
    const bus = new EmbeddedBus();
    const byName = new Map(o.capsules.map((c) => [c.manifest.package.name, c]));
    const started: AssembledSidecar[] = [];
    const assemble = async (name: string) => {
      const c = byName.get(name)!;
      // Only a capsule that declares buckets can reach a store (the host's gate refuses others).
      const kv = o.kv && c.manifest.capabilities.kv.length > 0 ? await o.kv(name) : undefined;
      const bindings = Object.fromEntries(
        plan.bindings.filter((b) => b.importer === name).map((b) => [b.interface, b.exporter]),
      );
      return assembleSidecar({
        packageDir: c.dir,
        manifest: c.manifest,
        bus,
        auditDir: path.join(o.sessionDir, "audit", name),
        stateDir: path.join(o.sessionDir, "state", name),
        identity: o.identity,
        tokens: o.tokens,
        requireCallerToken: true,
        session: o.session,
        grantIssuer: o.issuer,
        mode: o.mode,
        yes: o.yes,
        workspace: o.workspace,
        home: o.home,
        approvalTimeoutMs: o.approvalTimeoutMs,
        ...(o.budget ? { budget: o.budget } : {}),
        env: o.env,
        bindings,
        ...(o.extraConfig ? { extraConfig: o.extraConfig } : {}),
        ...(o.grantsFile ? { grantsFile: o.grantsFile } : {}),
        ...(kv ? { kv } : {}),
        logger: o.logger,
      });
    };
    try {
      // Exporters still start before their importers, but capsules of one level (none imports
      // another) start together: their file syncs and module loads overlap.
      for (const level of startLevels(plan)) {
        const results = await Promise.allSettled(level.map(assemble));
        for (const r of results) if (r.status === "fulfilled") started.push(r.value);
        const failed = results.find((r) => r.status === "rejected");
        if (failed) throw (failed as PromiseRejectedResult).reason;
      }
    } catch (err) {
      for (const s of started.reverse()) await s.close().catch(() => undefined);
      await bus.close();
      throw err;
    }
    return new SessionRuntime(o, bus, started, plan.order);
  }

  /** The session's grant: what the person's agent may call, bound to this session. */
  private sessionToken(): string {
    return mintToken(
      {
        sub: this.o.principal,
        res: ["tool:**", "topic:>"],
        perm: ["execute", "publish"],
        ses: this.o.session,
        exp: Math.floor(Date.now() / 1000) + 24 * 3600,
      },
      this.o.issuer,
    );
  }

  async prompt(
    text: string,
    opts: { stdin?: string; history?: ChatMessage[]; timeoutMs: number },
    h: PromptHandlers,
  ): Promise<SessionResponseBody> {
    const meta = { session: this.o.session, principal: this.o.principal, capsule: "cli" };
    const events = this.bus.subscribe(subjects.sessionEvents(this.o.session), (m: BusMessage) => {
      try {
        h.onEvent(expectKind(decode(m.data, { checkDeadline: false }), "session.event").body);
      } catch (err) {
        this.o.logger("warn", "dropped a malformed session event", {
          error: (err as Error).message,
        });
      }
    });
    const approvals = this.bus.subscribe(subjects.approvalRequest(this.o.session), (m) =>
      this.answerApproval(m, h),
    );
    try {
      const wire = encode(
        "session.prompt",
        {
          text,
          ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}),
          ...(opts.history && opts.history.length > 0 ? { history: opts.history } : {}),
          mode: this.o.mode,
        },
        meta,
        { timeoutMs: opts.timeoutMs },
      );
      const reply = await this.bus.request(subjects.sessionPrompt(this.o.session), wire, {
        timeoutMs: opts.timeoutMs,
        headers: { "astrid-token": this.sessionToken() },
      });
      const env = decode(reply.data, { checkDeadline: false });
      if (env.kind === "error") {
        const e = env.body as { code: string; message: string };
        throw Object.assign(new Error(e.message), { code: e.code });
      }
      return expectKind(env, "session.response").body;
    } finally {
      events.unsubscribe();
      approvals.unsubscribe();
    }
  }

  private async answerApproval(m: BusMessage, h: PromptHandlers): Promise<void> {
    const req = expectKind(decode(m.data, { checkDeadline: false }), "approval.request");
    const ask: ApprovalPrompt = {
      requestId: req.body.requestId,
      capsule: req.capsule,
      kind: req.body.action.kind,
      target: req.body.action.target,
      reason: req.body.reason,
    };
    let decision: ApprovalAnswer = "deny";
    let decidedBy = "no-approver";
    if (h.onApproval) {
      try {
        decision = await h.onApproval(ask);
        decidedBy = this.o.principal;
      } catch {
        decidedBy = "approver-error";
      }
    }
    m.respond(
      encode(
        "approval.decision",
        { requestId: ask.requestId, decision, decidedBy },
        { session: this.o.session, principal: this.o.principal, capsule: "cli" },
      ),
    );
  }

  async close(): Promise<void> {
    for (const s of [...this.sidecars].reverse()) await s.close().catch(() => undefined);
    await this.bus.close();
  }
}

/**
 * The start order cut into levels: a capsule's level is one past the highest level of the
 * capsules it imports from, so every exporter is up before anything that calls it starts.
 */
export function startLevels(plan: StartPlan): string[][] {
  const level = new Map<string, number>();
  for (const name of plan.order) {
    let l = 0;
    for (const b of plan.bindings) {
      if (b.importer === name) l = Math.max(l, (level.get(b.exporter) ?? -1) + 1);
    }
    level.set(name, l);
  }
  const levels: string[][] = [];
  for (const name of plan.order) {
    const l = level.get(name)!;
    levels[l] = [...(levels[l] ?? []), name];
  }
  return levels;
}
