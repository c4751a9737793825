/**
 * `astrid-sidecar`: hosts one capsule. Reads its configuration (flags, ASTRID_* variables, an
 * optional TOML file; see docs/sidecar.md), loads the capsule package, connects to the bus and
 * serves the capsule's exports under the five layers until SIGTERM, then drains. With
 * `task.text` (a session pod) it sends that one prompt once ready, writes the result and exits.
 *
 * `astrid-sidecar fetch-package` is the init container that downloads and verifies a package
 * (sidecar/fetch-package.ts).
 *
 * Exit codes: 0 stopped and drained, or task answered; 1 start failed or task failed; 2 bad
 * configuration or manifest; 70 uncaught error; 130 second signal while draining.
 */
import { createPrivateKey, createPublicKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Bus } from "../core/bus/bus.js";
import { EmbeddedBus } from "../core/bus/embedded.js";
import { connectNatsBus, type NatsBus } from "../core/bus/nats.js";
import { loadManifest, type Manifest, usdToMicro } from "../core/manifest/index.js";
import type { BudgetLimitsInput } from "../core/security/budget/limits.js";
import { TrustedKeys } from "../core/security/tokens/keys.js";
import { FileRevocationSet } from "../core/security/tokens/revocation/file-revocation-set.js";
import { KvRevocationSet } from "../core/security/tokens/revocation/kv-revocation-set.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import type { RevocationSet } from "../core/security/tokens/revocation/revocation-set.js";
import { TokenVerifier } from "../core/security/tokens/verifier.js";
import { assembleSidecar } from "./assemble.js";
import { loadSidecarConfig, type SidecarConfig, SidecarConfigError } from "./config.js";
import { defaultKvBucket, JetStreamKvStore } from "./enforce/kv-jetstream.js";
import { runFetchPackage } from "./fetch-package.js";
import { createLogger, type SidecarLogger } from "./log.js";
import { SidecarMetrics } from "./metrics.js";
import { parseBindings, parseSettings } from "./pairs.js";
import { runUntilSignal } from "./process.js";
import { runSessionTask } from "./task.js";

const EXIT_USAGE = 2;

async function main(): Promise<void> {
  if (process.argv[2] === "fetch-package") {
    process.exit(await runFetchPackage(process.argv.slice(3), process.env));
  }
  let config: SidecarConfig;
  try {
    const loaded = await loadSidecarConfig({ argv: process.argv.slice(2), env: process.env });
    if (loaded.kind === "help") {
      process.stdout.write(`${loaded.text}\n`);
      return;
    }
    config = loaded.config;
  } catch (err) {
    if (!(err instanceof SidecarConfigError)) throw err;
    process.stderr.write(`astrid-sidecar: ${err.message}\n`);
    process.exit(EXIT_USAGE);
  }
  let manifest: Manifest;
  try {
    manifest = await loadManifest(config.packageDir);
  } catch (err) {
    process.stderr.write(`astrid-sidecar: ${(err as Error).message}\n`);
    process.exit(EXIT_USAGE);
  }
  const capsule = manifest.package.name;
  const logger = createLogger({
    level: config.logLevel,
    capsule,
    session: config.session,
    principal: config.principal,
  });
  const metrics = new SidecarMetrics(capsule);
  await runUntilSignal({
    logger,
    drainTimeoutMs: config.drainTimeoutMs,
    http: { ...config.http, metrics },
    start: () => start(config, manifest, logger, metrics),
  });
}

async function start(
  config: SidecarConfig,
  manifest: Manifest,
  logger: SidecarLogger,
  metrics: SidecarMetrics,
) {
  const capsule = manifest.package.name;
  const identityKey = createPrivateKey(await readFile(config.identityKeyFile, "utf8"));
  let bus: Bus;
  if (config.bus.kind === "nats") {
    // The operator's per-capsule NATS user (operator/nats): the server enforces the
    // capsule's ACL even if something in the pod bypasses the sidecar.
    const creds = config.bus.credsFile ? await readFile(config.bus.credsFile) : undefined;
    const pass = config.bus.passwordFile
      ? (await readFile(config.bus.passwordFile, "utf8")).trim()
      : undefined;
    bus = await connectNatsBus({
      servers: config.bus.url,
      name: `astrid-sidecar:${capsule}`,
      ...(config.bus.user ? { user: config.bus.user } : {}),
      ...(pass ? { pass } : {}),
      ...(creds ? { creds: new Uint8Array(creds) } : {}),
      inboxPrefix: `_INBOX.${capsule}`,
      onError: (e) => logger.warn({ err: e.message }, "bus error"),
    });
  } else {
    bus = new EmbeddedBus({ onError: (e) => logger.warn({ err: e.message }, "bus error") });
  }
  const revocations = await openRevocations(config, bus);
  const keys = new TrustedKeys();
  for (const file of config.trustedIssuerKeys) {
    keys.add(createPublicKey(await readFile(file, "utf8")));
  }
  const tokens = new TokenVerifier({ keys, revocations });
  const log = (level: string, message: string, fields: Record<string, unknown>) =>
    (logger[level as "info"] ?? logger.info).call(logger, fields, message);

  const budget = budgetOverride(config, manifest);
  // Validated by the config schema already; parsed again here into the maps assemble takes.
  const bindings = parseBindings(config.bindings);
  const settings = parseSettings(config.settings);
  if (!bindings.ok || !settings.ok) throw new Error("bindings or settings are invalid");
  const kv =
    config.kv.kind === "jetstream"
      ? await JetStreamKvStore.open((bus as NatsBus).connection, {
          bucket: config.kv.bucket ?? defaultKvBucket(capsule),
        })
      : undefined;
  const assembled = await assembleSidecar({
    packageDir: config.packageDir,
    manifest,
    bus,
    auditDir: config.auditDir,
    auditSync: { sync: config.audit.sync, intervalMs: config.audit.syncIntervalMs },
    identity: { key: identityKey, keyId: config.identityKeyId },
    tokens,
    requireCallerToken: config.tokens.required,
    ...(config.session ? { session: config.session } : {}),
    mode: config.mode,
    workspace: config.workspace ?? "/nonexistent-workspace",
    home: config.home ?? "/nonexistent-home",
    stateDir: config.budgetDir ?? path.join(path.dirname(path.resolve(config.auditDir)), "state"),
    approvalTimeoutMs: config.approvalTimeoutMs,
    ...(budget ? { budget } : {}),
    env: declaredEnv(manifest),
    bindings: bindings.value,
    extraConfig: settings.value,
    ...(kv ? { kv } : {}),
    logger: log,
    observer: {
      callStarted: (kind) => {
        const end = metrics.callStarted(kind as "tool");
        return (outcome) => end(outcome);
      },
      denied: (layer) => metrics.denied(layer),
      appended: () => metrics.auditAppended(),
      auditFailed: (e) => {
        metrics.auditFailed();
        logger.error({ err: e.message }, "audit write failed; actions are being refused");
      },
      approval: (outcome) => metrics.approval(outcome as "deny"),
      budget: (session, ledger) => metrics.budget(session, ledger.snapshot()),
    },
  });
  logger.info(
    { mode: config.mode, engine: manifest.engine.type, kv: kv?.bucket ?? "local" },
    "serving",
  );
  const task = config.task;
  return {
    ...(task.text !== undefined
      ? {
          task: () =>
            runSessionTask({
              bus,
              // The config schema requires these with task.text.
              session: config.session!,
              principal: config.principal!,
              mode: config.mode,
              text: task.text!,
              tokenFile: task.tokenFile!,
              resultFile: task.resultFile!,
              timeoutMs: task.timeoutMs,
              logger,
            }),
        }
      : {}),
    ready: () => assembled.sidecar.ready,
    drain: () => assembled.sidecar.drain(),
    inFlight: () => [`${assembled.sidecar.inFlightCount} call(s)`],
    async close() {
      await assembled.close();
      await revocations.close();
      await bus.close();
    },
  };
}

async function openRevocations(config: SidecarConfig, bus: Bus): Promise<RevocationSet> {
  switch (config.revocation.kind) {
    case "file":
      return FileRevocationSet.open(config.revocation.path);
    case "kv":
      if (bus.kind !== "nats") throw new Error("revocation.kind = kv needs bus.kind = nats");
      return KvRevocationSet.open((bus as NatsBus).connection, {
        bucket: config.revocation.bucket,
      });
    case "none":
      return new MemoryRevocationSet();
  }
}

/** Session limits: each one the configuration sets overrides the manifest's [budget]. */
function budgetOverride(config: SidecarConfig, manifest: Manifest): BudgetLimitsInput | undefined {
  const b = config.budget ?? {};
  const m = manifest.budget;
  const micro = (usd: string | undefined) => {
    if (usd === undefined) return undefined;
    const r = usdToMicro(usd);
    if (!r.ok) throw new Error(`budget: ${r.error}`);
    return r.micro;
  };
  const perCallTokens = b.maxCallTokens ?? m?.max_call_tokens;
  const sessionTokens = b.maxSessionTokens ?? m?.max_session_tokens;
  const perCallMicro = micro(b.maxCallUsd) ?? m?.max_call_micro_usd;
  const sessionMicro = micro(b.maxSessionUsd) ?? m?.max_session_micro_usd;
  if (
    perCallTokens === undefined ||
    sessionTokens === undefined ||
    perCallMicro === undefined ||
    sessionMicro === undefined
  ) {
    return undefined; // no complete budget: model calls are refused (fail closed)
  }
  return {
    tokens: { perCall: perCallTokens, session: sessionTokens },
    microUsd: { perCall: perCallMicro, session: sessionMicro },
    warnPercent: b.warnPercent ?? m?.warn_at_percent ?? 80,
  };
}

/** Values of the env names the manifest declares, from the sidecar's own environment. */
function declaredEnv(manifest: Manifest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of Object.keys(manifest.env)) {
    const v = process.env[name];
    if (v !== undefined) out[name] = v;
  }
  return out;
}

await main();
