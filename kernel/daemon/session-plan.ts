/**
 * What a new session runs, decided from its inputs alone: which installed capsules start, how
 * they are wired, the settings each sidecar is bound with, and where their kv entries live. One
 * pure function, so the session a prompt gets and a session the daemon prepared in advance for
 * the same inputs are the same session in all but their ids.
 *
 * What starts is what the configuration names, and what that reaches through bindings:
 * - the orchestrator and every tool capsule;
 * - every capsule of an explicit `[capsules] enabled` list — the user wrote its name, so it runs
 *   even when no binding reaches it: a router's second provider is called by the name in the
 *   router's setting (ROUTER_PROVIDERS), which is not a binding the kernel could follow.
 * With `enabled` unset (every installed capsule may run) only the first kind starts, so an
 * installed provider nobody uses (and which may lack its key) is not started. A tool, or a
 * capsule only named in `enabled`, whose required settings are missing is left out with a note
 * instead of failing every prompt; one the orchestrator's bindings reach fails the start.
 */
import { type Bindings, resolveGraph } from "../../core/manifest/index.js";
import type { SecurityMode } from "../../core/security/modes/policy-table.js";
import type { KvStore } from "../../sidecar/enforce/kv.js";
import { budgetLimitsOf } from "../config/limits.js";
import type { loadEffectiveConfig } from "../config/resolve.js";
import { BUILTIN_PROVIDERS } from "../config/schema.js";
import type { InstalledEntry } from "../store.js";
import { sessionBindings } from "../wiring.js";
import type { SessionRuntimeOptions } from "./session-runtime.js";

export type EffectiveConfig = Awaited<ReturnType<typeof loadEffectiveConfig>>["config"];

/** Everything a session's runtime depends on, besides the daemon's own keys. */
export interface SessionInputs {
  readonly workspace: string;
  readonly mode: SecurityMode;
  readonly yes: boolean;
  readonly config: EffectiveConfig;
}

/** The session options that do not name the session (its id and folder are added at start). */
export type SessionPlan = Omit<SessionRuntimeOptions, "session" | "sessionDir">;

export interface PlanContext {
  readonly home: string;
  readonly userHome: string;
  readonly principal: string;
  /** The daemon's environment: where capsules' declared env values come from. */
  readonly env: NodeJS.ProcessEnv;
  readonly orchestrator: string | undefined;
  readonly grantsFile: string;
  /** The home's persistent kv store of a capsule; used when config.toml's `kv.persist` holds. */
  readonly kv?: (capsule: string) => Promise<KvStore>;
  readonly log: (line: string) => void;
  readonly base: Pick<SessionRuntimeOptions, "identity" | "issuer" | "tokens" | "logger">;
}

/**
 * A key that is equal for two sessions exactly when planSession would give them the same plan:
 * the inputs, and the installed versions (name, version, digest) of the capsules they may run.
 * The whole config is in it, so `capsules.enabled` (what starts) and `kv.persist` (which store)
 * are. The daemon's environment and keys are fixed for its lifetime, so they are not part of it.
 */
export function sessionFingerprint(
  inputs: SessionInputs,
  installed: readonly { name: string; version: string; digest: string }[],
): string {
  return JSON.stringify([
    inputs.workspace,
    inputs.mode,
    inputs.yes,
    inputs.config,
    installed.map((e) => [e.name, e.version, e.digest]),
  ]);
}

export function planSession(
  ctx: PlanContext,
  inputs: SessionInputs,
  installed: readonly InstalledEntry[],
  session: string,
): SessionPlan {
  const { config } = inputs;
  const capsules = installed.map((e) => ({ dir: e.dir, manifest: e.manifest }));
  const orchestrator = ctx.orchestrator ?? config.defaults.orchestrator;
  const bindings = sessionBindings(
    config.bindings,
    config.defaults.provider,
    capsules.map((c) => c.manifest),
  );
  const names = capsules.map((c) => c.manifest.package.name);
  const toolCapsules = capsules
    .filter((c) => c.manifest.exports.astrid?.tool !== undefined)
    .map((c) => c.manifest.package.name);
  // Named in `enabled` (installed: `installed` holds only enabled capsules when it is set).
  const named = (config.capsules.enabled ?? []).filter((n) => names.includes(n));
  const plan = resolveGraph(
    capsules.map((c) => c.manifest),
    bindings as Bindings,
  );
  // A tool or named capsule whose required settings are missing (a GITHUB_TOKEN nobody
  // exported) is left out of the session with a note, instead of failing every prompt.
  const env = capsuleEnv(ctx.env, config);
  const missingOf = (name: string) => {
    const c = capsules.find((x) => x.manifest.package.name === name)!;
    return Object.entries(c.manifest.env)
      .filter(
        ([n, e]) =>
          e.required && env[n] === undefined && !(e.type === "string" && e.default !== undefined),
      )
      .map(([n]) => n);
  };
  const left = new Set<string>();
  const leave = (name: string) => {
    const missing = missingOf(name);
    if (missing.length === 0) return false;
    left.add(name);
    ctx.log(`session ${session}: ${name} not started: ${missing.join(", ")} not set`);
    return true;
  };
  for (const t of toolCapsules) leave(t);
  const needed = new Set<string>();
  const visit = (name: string) => {
    if (needed.has(name) || left.has(name)) return;
    needed.add(name);
    for (const b of plan.bindings) if (b.importer === name) visit(b.exporter);
  };
  visit(orchestrator);
  for (const t of toolCapsules) visit(t);
  // Named capsules last: one the orchestrator or a tool already reaches starts (or its start
  // fails saying what is missing) whatever the list says.
  for (const name of named) {
    if (!needed.has(name) && !left.has(name) && !leave(name)) visit(name);
  }
  return {
    ...ctx.base,
    principal: ctx.principal,
    workspace: inputs.workspace,
    home: ctx.userHome,
    mode: inputs.mode,
    yes: inputs.yes,
    capsules: capsules.filter((c) => needed.has(c.manifest.package.name)),
    bindings: Object.fromEntries(Object.entries(bindings).filter(([k]) => needed.has(k))),
    orchestrator,
    budget: budgetLimitsOf(config, inputs.mode),
    env,
    extraConfig: { tool_capsules: toolCapsules.filter((t) => needed.has(t)).join(",") },
    approvalTimeoutMs: config.approvals.timeout_seconds * 1000,
    grantsFile: ctx.grantsFile,
    ...(config.kv.persist && ctx.kv ? { kv: ctx.kv } : {}),
  };
}

/**
 * The values capsules may declare in [env]: the daemon's environment (a capsule only ever sees
 * the names its manifest declares) and config.toml's provider settings on top.
 */
function capsuleEnv(daemonEnv: NodeJS.ProcessEnv, config: EffectiveConfig) {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(daemonEnv)) if (v !== undefined) env[k] = v;
  return { ...env, ...providerEnv(daemonEnv, config) };
}

/** Provider settings of config.toml as the provider capsules' declared env values. */
function providerEnv(daemonEnv: NodeJS.ProcessEnv, config: EffectiveConfig) {
  const env: Record<string, string> = {};
  const providers = { ...BUILTIN_PROVIDERS, ...config.providers };
  for (const [name, p] of Object.entries(providers)) {
    const prefix = name.toUpperCase().replace(/-/g, "_");
    if (p.api_key_env && daemonEnv[p.api_key_env]) {
      env[`${prefix}_API_KEY`] = daemonEnv[p.api_key_env]!;
    }
    if (p.base_url) env[`${prefix}_BASE_URL`] = p.base_url;
    const model = name === config.defaults.provider ? (config.defaults.model ?? p.model) : p.model;
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
