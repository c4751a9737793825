/**
 * astrid-daemon, the local kernel: serves `astrid` clients on the Unix socket of one home, and
 * runs each session's capsules (newest installed versions, wired by config.toml's bindings)
 * under session-bound sidecars. Prompts stream events back to the client; approval requests
 * travel to the client and its answer back to the waiting sidecar.
 */
import { createPublicKey } from "node:crypto";
import { rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { ChatMessage } from "../../core/protocol/messages.js";
import type { SecurityMode } from "../../core/security/modes/policy-table.js";
import type { IssuerKey } from "../../core/security/tokens/keys.js";
import { keyIdOf, rawPublicKey, TrustedKeys } from "../../core/security/tokens/keys.js";
import { FileRevocationSet } from "../../core/security/tokens/revocation/file-revocation-set.js";
import { TokenVerifier } from "../../core/security/tokens/verifier.js";
import { KERNEL_KEY_ID } from "../cli/local-commands.js";
import { homeLayout, readHomeKey } from "../config/home.js";
import { loadEffectiveConfig } from "../config/resolve.js";
import { type DaemonConnection, DaemonServer } from "../ipc/server.js";
import type { ClientRequest } from "../protocol.js";
import { CapsuleStore } from "../store.js";
import { HomeKvStores } from "./kv-stores.js";
import { type Prepared, PreparedSession } from "./prepared-session.js";
import {
  type PlanContext,
  planSession,
  type SessionInputs,
  sessionFingerprint,
} from "./session-plan.js";
import { type ApprovalAnswer, SessionRuntime } from "./session-runtime.js";
import { newSessionId, SessionFiles } from "./sessions.js";

export const DAEMON_VERSION = "0.1.0";

export interface DaemonOptions {
  readonly home: string;
  /** Where provider keys and other capsule env values come from (the daemon's environment). */
  readonly env: NodeJS.ProcessEnv;
  readonly log: (line: string) => void;
  /** The orchestrator capsule that serves prompts. */
  readonly orchestrator?: string;
}

type Prompt = Extract<ClientRequest, { type: "prompt" }>;

/**
 * Sessions whose runtime stays up between turns (for `--session` to continue at once). Beyond
 * this, the least recently used idle one is closed — it restarts from its folder when continued:
 * each holds a QuickJS memory per capsule, and V8 collects garbage more often the more of that
 * external memory there is, which slowed every later session down.
 */
const LIVE_SESSIONS = 4;

interface LiveSession {
  readonly mode: string;
  readonly runtime: SessionRuntime;
  /** Prompts running on it; a busy session is never closed to make room. */
  busy: number;
}

export class Kernel {
  /** In least-recently-used order: a session is moved to the end when a prompt uses it. */
  private readonly runtimes = new Map<string, LiveSession>();
  private readonly pendingApprovals = new Map<string, (a: ApprovalAnswer) => void>();
  private server: DaemonServer | undefined;
  private readonly prepared: PreparedSession;
  private readonly plan: PlanContext;

  private constructor(
    private readonly o: DaemonOptions,
    private readonly sessions: SessionFiles,
    private readonly store: CapsuleStore,
    identity: { key: import("node:crypto").KeyObject; keyId: string },
    issuer: IssuerKey,
    tokens: TokenVerifier,
    private readonly revocations: FileRevocationSet,
  ) {
    this.prepared = new PreparedSession((p) => this.discardPrepared(p), o.log);
    const kv = new HomeKvStores(homeLayout(o.home).kv);
    this.plan = {
      home: o.home,
      userHome: os.homedir(),
      principal: `user:${os.userInfo().username}`,
      env: o.env,
      orchestrator: o.orchestrator,
      grantsFile: homeLayout(o.home).grants,
      kv: (capsule) => kv.of(capsule),
      log: o.log,
      base: {
        identity,
        issuer,
        tokens,
        logger: (level, message, fields) => {
          if (level === "warn" || level === "error") {
            o.log(`${level} ${message} ${JSON.stringify(fields)}`);
          }
        },
      },
    };
  }

  static async start(o: DaemonOptions): Promise<Kernel> {
    const layout = homeLayout(o.home);
    const kernelKey = await readHomeKey(layout.kernelKey);
    const issuerPrivate = await readHomeKey(layout.issuerKey);
    const issuerPublic = createPublicKey(issuerPrivate);
    const raw = rawPublicKey(issuerPublic);
    const issuer: IssuerKey = {
      kid: keyIdOf(raw),
      privateKey: issuerPrivate,
      publicKey: issuerPublic,
      publicKeyRaw: raw,
    };
    const revocations = await FileRevocationSet.open(path.join(o.home, "revoked.jsonl"));
    const tokens = new TokenVerifier({ keys: new TrustedKeys([issuerPublic]), revocations });
    const k = new Kernel(
      o,
      new SessionFiles(layout.sessions),
      new CapsuleStore(layout.capsules),
      { key: kernelKey, keyId: KERNEL_KEY_ID },
      issuer,
      tokens,
      revocations,
    );
    k.server = await DaemonServer.listen({
      home: o.home,
      version: DAEMON_VERSION,
      onRequest: (req, conn, signal) => k.handle(req, conn, signal),
      onOrphaned: () => void k.stop().then(() => process.exit(0)),
    });
    o.log(`astrid-daemon ${DAEMON_VERSION} serving ${o.home} (pid ${process.pid})`);
    return k;
  }

  async stop(): Promise<void> {
    // A question nobody can answer any more is a deny; otherwise a pending approval would hold
    // the drain (and the daemon) until its timeout.
    for (const answer of [...this.pendingApprovals.values()]) answer("deny");
    await this.prepared.close();
    for (const { runtime } of this.runtimes.values()) await runtime.close().catch(() => undefined);
    this.runtimes.clear();
    await this.server?.close();
    await this.revocations.close();
  }

  private async handle(req: ClientRequest, conn: DaemonConnection, signal: AbortSignal) {
    try {
      switch (req.type) {
        case "prompt":
          return await this.prompt(req, conn, signal);
        case "approval.answer": {
          this.pendingApprovals.get(req.requestId)?.(req.decision);
          return;
        }
        case "session.list":
          conn.send({ type: "result", id: req.id, data: await this.sessions.list() });
          return;
        case "session.show": {
          const data = {
            ...(await this.sessions.meta(req.session)),
            usage: await this.sessions.usage(req.session),
            transcript: await this.sessions.transcript(req.session),
          };
          conn.send({ type: "result", id: req.id, data });
          return;
        }
        case "session.delete": {
          await this.closeRuntime(req.session);
          await this.sessions.remove(req.session);
          conn.send({ type: "result", id: req.id, data: { deleted: req.session } });
          return;
        }
        case "capsule.list": {
          const data = (await this.store.list()).map((e) => ({
            name: e.name,
            version: e.version,
            digest: e.digest,
          }));
          conn.send({ type: "result", id: req.id, data });
          return;
        }
        case "status":
          conn.send({
            type: "result",
            id: req.id,
            data: {
              pid: process.pid,
              version: DAEMON_VERSION,
              home: this.o.home,
              sessions: [...this.runtimes.keys()],
            },
          });
          return;
        case "stop":
          conn.send({ type: "result", id: req.id, data: { stopping: true } });
          setImmediate(() => void this.stop().then(() => process.exit(0)));
          return;
      }
    } catch (err) {
      conn.send({ type: "error", id: req.id, code: "failed", message: (err as Error).message });
    }
  }

  private async closeRuntime(session: string) {
    const r = this.runtimes.get(session);
    this.runtimes.delete(session);
    await r?.runtime.close();
  }

  /** Starts a session's runtime; the fingerprint says which inputs and packages it ran on. */
  private async startSession(id: string, inputs: SessionInputs) {
    const installed = await this.store.latest(inputs.config.capsules.enabled);
    const runtime = await SessionRuntime.start({
      ...planSession(this.plan, inputs, installed, id),
      session: id,
      sessionDir: this.sessions.dir(id),
    });
    return { runtime, fingerprint: sessionFingerprint(inputs, installed) };
  }

  /** The runtime of a session being continued: the live one, or started again from its folder. */
  private async runtimeFor(id: string, inputs: SessionInputs) {
    const key = `${inputs.mode}/${inputs.yes}`;
    const have = this.runtimes.get(id);
    if (have?.mode === key) return have;
    if (have) await this.closeRuntime(id);
    return { mode: key, runtime: (await this.startSession(id, inputs)).runtime, busy: 0 };
  }

  /**
   * A new session: the one prepared for these inputs if there is one, else started now — while
   * `files` writes its folder (meta, first turn), which needs the id but not the runtime.
   */
  private async newSession(
    inputs: SessionInputs,
    files: (id: string) => Promise<void>,
  ): Promise<{ id: string; live: LiveSession; fingerprint: string }> {
    const fingerprint = sessionFingerprint(
      inputs,
      await this.store.newest(inputs.config.capsules.enabled),
    );
    const prepared = await this.prepared.take(fingerprint);
    const id = prepared?.session ?? newSessionId();
    const [runtime, written] = await Promise.allSettled([
      prepared
        ? Promise.resolve(prepared.runtime)
        : this.startSession(id, inputs).then((s) => s.runtime),
      files(id),
    ]);
    if (written.status === "rejected") {
      if (runtime.status === "fulfilled") await runtime.value.close().catch(() => undefined);
      throw written.reason;
    }
    if (runtime.status === "rejected") throw runtime.reason;
    return {
      id,
      live: { mode: `${inputs.mode}/${inputs.yes}`, runtime: runtime.value, busy: 0 },
      fingerprint,
    };
  }

  /** After a turn, while nobody waits: the session the next prompt like it will take. */
  private prepareNext(inputs: SessionInputs, fingerprint: string): void {
    this.prepared.prepare(fingerprint, async () => {
      const id = newSessionId();
      try {
        return { session: id, ...(await this.startSession(id, inputs)) };
      } catch (err) {
        await rm(this.sessions.dir(id), { recursive: true, force: true });
        throw err;
      }
    });
  }

  private async discardPrepared(p: Prepared): Promise<void> {
    await p.runtime.close();
    // Never announced nor listed (no meta.json): its folder holds only its start's audit records.
    await rm(this.sessions.dir(p.session), { recursive: true, force: true });
  }

  /** Closes the least recently used idle sessions beyond LIVE_SESSIONS. */
  private async evictIdle(): Promise<void> {
    for (const [id, live] of this.runtimes) {
      if (this.runtimes.size <= LIVE_SESSIONS) return;
      if (live.busy === 0) await this.closeRuntime(id);
    }
  }

  private async prompt(req: Prompt, conn: DaemonConnection, signal: AbortSignal) {
    const { config } = await loadEffectiveConfig(this.o.home, req.workspace);
    const yes = req.yes ?? false;
    const userTurn = (id: string) =>
      this.sessions.append(id, {
        at: new Date().toISOString(),
        role: "user",
        text: req.text,
        ...(req.stdin !== undefined ? { stdin: req.stdin } : {}),
      });
    let id: string;
    let live: LiveSession;
    let history: ChatMessage[] = [];
    let next: { inputs: SessionInputs; fingerprint: string } | undefined;
    if (req.session) {
      id = req.session;
      const mode: SecurityMode = req.mode ?? (await this.sessions.meta(id)).mode;
      conn.send({ type: "session.started", id: req.id, session: id });
      history = await this.sessions.history(id);
      await userTurn(id);
      live = await this.runtimeFor(id, { workspace: req.workspace, mode, yes, config });
    } else {
      const inputs = {
        workspace: req.workspace,
        mode: req.mode ?? config.defaults.mode,
        yes,
        config,
      };
      const started = await this.newSession(inputs, async (newId) => {
        await this.sessions.create({
          id: newId,
          createdAt: new Date().toISOString(),
          principal: this.plan.principal,
          workspace: req.workspace,
          mode: inputs.mode,
        });
        conn.send({ type: "session.started", id: req.id, session: newId });
        await userTurn(newId);
      });
      ({ id, live } = started);
      next = { inputs, fingerprint: started.fingerprint };
    }
    this.runtimes.delete(id);
    this.runtimes.set(id, live);
    live.busy++;
    try {
      await this.turn(req, conn, signal, id, live.runtime, history);
    } finally {
      live.busy--;
      void this.evictIdle().catch((err: Error) => this.o.log(`closing a session: ${err.message}`));
    }
    // One-off prompts come in series (`astrid -p` in a script, a person's next question): the
    // next one like this finds its session started. ASTRID_PREPARE_SESSIONS=0 in the daemon's
    // environment turns this off (it keeps one more session's capsules in memory).
    if (next && this.o.env.ASTRID_PREPARE_SESSIONS !== "0") {
      const { inputs, fingerprint } = next;
      setImmediate(() => this.prepareNext(inputs, fingerprint));
    }
  }

  private async turn(
    req: Prompt,
    conn: DaemonConnection,
    signal: AbortSignal,
    id: string,
    runtime: SessionRuntime,
    history: ChatMessage[],
  ) {
    let deltaSeen = false;
    const res = await runtime.prompt(
      req.text,
      {
        ...(req.stdin !== undefined ? { stdin: req.stdin } : {}),
        history,
        timeoutMs: 30 * 60_000,
      },
      {
        onEvent: (e) => {
          if (e.type === "delta") {
            deltaSeen = true;
            conn.send({ type: "delta", id: req.id, text: e.text });
          } else if (e.type === "tool_call") {
            conn.send({
              type: "tool",
              id: req.id,
              tool: e.tool,
              phase: "call",
              summary: JSON.stringify(e.arguments).slice(0, 200),
            });
          } else if (e.type === "tool_result") {
            conn.send({
              type: "tool",
              id: req.id,
              tool: e.callId,
              phase: "result",
              summary: e.summary,
            });
          }
        },
        onApproval: (a) =>
          new Promise<ApprovalAnswer>((resolve) => {
            const onAbort = () => done("deny");
            const done = (d: ApprovalAnswer) => {
              this.pendingApprovals.delete(a.requestId);
              signal.removeEventListener("abort", onAbort);
              resolve(d);
            };
            this.pendingApprovals.set(a.requestId, done);
            signal.addEventListener("abort", onAbort, { once: true });
            if (!conn.send({ type: "approval.needed", id: req.id, ...a })) done("deny");
          }),
      },
    );
    if (!deltaSeen && res.text) conn.send({ type: "delta", id: req.id, text: res.text });
    await this.sessions.append(id, {
      at: new Date().toISOString(),
      role: "assistant",
      text: res.text,
      stopReason: res.stopReason,
    });
    await this.sessions.addUsage(id, res.usage);
    conn.send({
      type: "done",
      id: req.id,
      session: id,
      text: res.text,
      stopReason: res.stopReason,
      usage: {
        inputTokens: res.usage.inputTokens,
        outputTokens: res.usage.outputTokens,
        costMicroUsd: res.usage.costMicroUsd ?? 0,
      },
    });
  }
}
