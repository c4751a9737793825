/**
 * astrid-daemon, the local kernel: serves `astrid` clients on the Unix socket of one home, and
 * runs each session's capsules (newest installed versions, wired by config.toml's bindings)
 * under session-bound sidecars. Prompts stream events back to the client; approval requests
 * travel to the client and its answer back to the waiting sidecar.
 */
import { createPublicKey } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { type Bindings, resolveGraph } from "../../core/manifest/index.js";
import type { SecurityMode } from "../../core/security/modes/policy-table.js";
import type { IssuerKey } from "../../core/security/tokens/keys.js";
import { keyIdOf, rawPublicKey, TrustedKeys } from "../../core/security/tokens/keys.js";
import { FileRevocationSet } from "../../core/security/tokens/revocation/file-revocation-set.js";
import { TokenVerifier } from "../../core/security/tokens/verifier.js";
import { KERNEL_KEY_ID } from "../cli/local-commands.js";
import { homeLayout, readHomeKey } from "../config/home.js";
import { budgetLimitsOf } from "../config/limits.js";
import { loadEffectiveConfig } from "../config/resolve.js";
import { BUILTIN_PROVIDERS } from "../config/schema.js";
import { type DaemonConnection, DaemonServer } from "../ipc/server.js";
import type { ClientRequest } from "../protocol.js";
import { CapsuleStore } from "../store.js";
import { sessionBindings } from "../wiring.js";
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

export class Kernel {
  private readonly runtimes = new Map<string, { mode: string; runtime: SessionRuntime }>();
  private readonly pendingApprovals = new Map<string, (a: ApprovalAnswer) => void>();
  private server: DaemonServer | undefined;

  private constructor(
    private readonly o: DaemonOptions,
    private readonly sessions: SessionFiles,
    private readonly store: CapsuleStore,
    private readonly identity: { key: import("node:crypto").KeyObject; keyId: string },
    private readonly issuer: IssuerKey,
    private readonly tokens: TokenVerifier,
    private readonly revocations: FileRevocationSet,
  ) {}

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

  private async runtimeFor(id: string, mode: SecurityMode, yes: boolean, workspace: string) {
    const key = `${mode}/${yes}`;
    const have = this.runtimes.get(id);
    if (have?.mode === key) return have.runtime;
    if (have) await this.closeRuntime(id);
    const { config } = await loadEffectiveConfig(this.o.home, workspace);
    const installed = await this.store.latest();
    const enabled = config.capsules.enabled;
    const capsules = installed
      .filter((e) => !enabled || enabled.includes(e.name))
      .map((e) => ({ dir: e.dir, manifest: e.manifest }));
    const orchestrator = this.o.orchestrator ?? config.defaults.orchestrator;
    const bindings = sessionBindings(
      config.bindings,
      config.defaults.provider,
      capsules.map((c) => c.manifest),
    );
    const toolCapsules = capsules
      .filter((c) => c.manifest.exports.astrid?.tool !== undefined)
      .map((c) => c.manifest.package.name);
    // Start what the session can reach — the orchestrator, what it is wired to, and the tools —
    // so an installed provider that is not used (and may lack its key) is not started.
    const plan = resolveGraph(
      capsules.map((c) => c.manifest),
      bindings as Bindings,
    );
    // A tool capsule whose required settings are missing (a GITHUB_TOKEN nobody exported) is left
    // out of the session with a note, instead of failing every prompt.
    const env = this.capsuleEnv(config);
    const left = new Set<string>();
    for (const t of toolCapsules) {
      const c = capsules.find((x) => x.manifest.package.name === t)!;
      const missing = Object.entries(c.manifest.env)
        .filter(
          ([n, e]) =>
            e.required && env[n] === undefined && !(e.type === "string" && e.default !== undefined),
        )
        .map(([n]) => n);
      if (missing.length > 0) {
        left.add(t);
        this.o.log(`session ${id}: ${t} not started: ${missing.join(", ")} not set`);
      }
    }
    const needed = new Set<string>();
    const visit = (name: string) => {
      if (needed.has(name) || left.has(name)) return;
      needed.add(name);
      for (const b of plan.bindings) if (b.importer === name) visit(b.exporter);
    };
    visit(orchestrator);
    for (const t of toolCapsules) visit(t);
    const runtime = await SessionRuntime.start({
      session: id,
      principal: `user:${os.userInfo().username}`,
      sessionDir: this.sessions.dir(id),
      workspace,
      home: os.homedir(),
      mode,
      yes,
      capsules: capsules.filter((c) => needed.has(c.manifest.package.name)),
      bindings: Object.fromEntries(Object.entries(bindings).filter(([k]) => needed.has(k))),
      orchestrator,
      identity: this.identity,
      issuer: this.issuer,
      tokens: this.tokens,
      budget: budgetLimitsOf(config, mode),
      env,
      extraConfig: { tool_capsules: toolCapsules.filter((t) => needed.has(t)).join(",") },
      approvalTimeoutMs: config.approvals.timeout_seconds * 1000,
      grantsFile: homeLayout(this.o.home).grants,
      logger: (level, message, fields) => {
        if (level === "warn" || level === "error") {
          this.o.log(`${level} ${message} ${JSON.stringify(fields)}`);
        }
      },
    });
    this.runtimes.set(id, { mode: key, runtime });
    return runtime;
  }

  /**
   * The values capsules may declare in [env]: the daemon's environment (a capsule only ever sees
   * the names its manifest declares) and config.toml's provider settings on top.
   */
  private capsuleEnv(config: Awaited<ReturnType<typeof loadEffectiveConfig>>["config"]) {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(this.o.env)) if (v !== undefined) env[k] = v;
    return { ...env, ...this.providerEnv(config) };
  }

  /** Provider settings of config.toml as the provider capsules' declared env values. */
  private providerEnv(config: Awaited<ReturnType<typeof loadEffectiveConfig>>["config"]) {
    const env: Record<string, string> = {};
    const providers = { ...BUILTIN_PROVIDERS, ...config.providers };
    for (const [name, p] of Object.entries(providers)) {
      const prefix = name.toUpperCase().replace(/-/g, "_");
      if (p.api_key_env && this.o.env[p.api_key_env]) {
        env[`${prefix}_API_KEY`] = this.o.env[p.api_key_env]!;
      }
      if (p.base_url) env[`${prefix}_BASE_URL`] = p.base_url;
      const model =
        name === config.defaults.provider ? (config.defaults.model ?? p.model) : p.model;
      if (model) env[`${prefix}_MODEL`] = model;
      if (p.price && Object.keys(p.price).length > 0) {
        env[`${prefix}_PRICES`] = JSON.stringify(
          Object.fromEntries(
            Object.entries(p.price).map(([m, pr]) => [
              m,
              { inputPerMTok: pr.input, outputPerMTok: pr.output },
            ]),
          ),
        );
      }
    }
    return env;
  }

  private async prompt(req: Prompt, conn: DaemonConnection, signal: AbortSignal) {
    const { config } = await loadEffectiveConfig(this.o.home, req.workspace);
    const id = req.session ?? newSessionId();
    let mode: SecurityMode = req.mode ?? config.defaults.mode;
    if (req.session) {
      mode = req.mode ?? (await this.sessions.meta(req.session)).mode;
    } else {
      await this.sessions.create({
        id,
        createdAt: new Date().toISOString(),
        principal: `user:${os.userInfo().username}`,
        workspace: req.workspace,
        mode,
      });
    }
    conn.send({ type: "session.started", id: req.id, session: id });
    const history = await this.sessions.history(id);
    await this.sessions.append(id, {
      at: new Date().toISOString(),
      role: "user",
      text: req.text,
      ...(req.stdin !== undefined ? { stdin: req.stdin } : {}),
    });
    const runtime = await this.runtimeFor(id, mode, req.yes ?? false, req.workspace);
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
