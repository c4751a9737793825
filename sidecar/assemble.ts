/**
 * Builds a running sidecar from a capsule package and its settings: the five layers from the
 * manifest, the audit chain, the approval bridge, the engine, and the exports. `astrid-sidecar`
 * (a pod's container) and the local daemon both call this, so both shapes enforce the same way.
 */
import type { KeyObject } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { AuditChain, type AuditSyncMode } from "../core/audit/index.js";
import type { Bus } from "../core/bus/bus.js";
import type { Manifest } from "../core/manifest/index.js";
import { IpcAcl } from "../core/security/acl/ipc-acl.js";
import { Approvals } from "../core/security/approval/approvals.js";
import { ApprovalBroker } from "../core/security/approval/broker.js";
import { ApprovalStore } from "../core/security/approval/store.js";
import { BudgetLedger } from "../core/security/budget/ledger.js";
import type { BudgetLimitsInput } from "../core/security/budget/limits.js";
import { ManifestGate } from "../core/security/gate/gate.js";
import type { SecurityMode } from "../core/security/modes/modes.js";
import type { IssuerKey } from "../core/security/tokens/keys.js";
import { mintToken } from "../core/security/tokens/mint.js";
import type { TokenVerifier } from "../core/security/tokens/verifier.js";
import type { LogLevel } from "./abi/host.js";
import { attachBusApprover } from "./enforce/approvals-over-bus.js";
import { type KvStore, MemoryKvStore } from "./enforce/kv.js";
import { type CapsuleExport, mcpExports, staticExports, wasmExports } from "./engine/exports.js";
import { McpEngine } from "./engine/mcp/mcp-engine.js";
import { serverEnvironment } from "./engine/mcp/server-env.js";
import { StaticEngine } from "./engine/static/static-engine.js";
import { CoreWasmEngine } from "./engine/wasm/core-engine.js";
import { QuickJsEngine } from "./engine/wasm/quickjs-engine.js";
import { Sidecar, type SidecarObserver } from "./sidecar.js";

export interface AssembleOptions {
  readonly packageDir: string;
  readonly manifest: Manifest;
  /** Defaults to the manifest's package name. */
  readonly capsule?: string;
  readonly bus: Bus;
  readonly auditDir: string;
  /**
   * Audit durability; default `{ sync: "always" }`. "interval" acknowledges a decision once
   * written and syncs within `intervalMs`: a host crash can lose that interval's entries.
   */
  readonly auditSync?: { readonly sync: AuditSyncMode; readonly intervalMs?: number };
  readonly identity: { readonly key: KeyObject; readonly keyId: string };
  readonly tokens: TokenVerifier | undefined;
  readonly requireCallerToken: boolean;
  /** A session-bound sidecar refuses requests of any other session. */
  readonly session?: string;
  /** Signs tokens minted for "allow always" answers; without it such answers are refused. */
  readonly grantIssuer?: IssuerKey;
  readonly mode: SecurityMode;
  readonly yes?: boolean;
  readonly workspace: string;
  readonly home: string;
  readonly stateDir: string;
  /** Lasting approval grants; default `<stateDir>/grants.json`. The local kernel shares one. */
  readonly grantsFile?: string;
  readonly approvalTimeoutMs?: number;
  /** Session limits; the manifest's [budget] fills what is not given. */
  readonly budget?: BudgetLimitsInput;
  /** Values for the manifest's [env] entries (from the sidecar's own environment or files). */
  readonly env?: Readonly<Record<string, string>>;
  readonly kv?: KvStore;
  /**
   * This capsule's resolved imports, `{ "astrid.llm": "cache" }`: the guest reads them as
   * config `bind.astrid.llm` and addresses that capsule. Rewiring is a change here, never in code.
   */
  readonly bindings?: Readonly<Record<string, string>>;
  /** Further non-secret settings the guest reads with config() (e.g. the kernel's tool list). */
  readonly extraConfig?: Readonly<Record<string, string>>;
  readonly logger: (level: LogLevel, message: string, fields: Record<string, unknown>) => void;
  readonly observer?: SidecarObserver;
}

export interface AssembledSidecar {
  readonly sidecar: Sidecar;
  readonly audit: AuditChain;
  readonly broker: ApprovalBroker;
  /** Drain calls, stop the engine, close the audit chain. */
  close(): Promise<void>;
}

export async function assembleSidecar(o: AssembleOptions): Promise<AssembledSidecar> {
  const m = o.manifest;
  const capsule = o.capsule ?? m.package.name;
  const caps = m.capabilities;
  const acl = new IpcAcl(
    { publish: caps.ipc_publish, subscribe: caps.ipc_subscribe },
    { capsuleId: capsule },
  );
  const gate = new ManifestGate({
    workspace: o.workspace,
    home: o.home,
    fsRead: caps.fs_read,
    fsWrite: caps.fs_write,
    net: caps.net,
    netBind: caps.net_bind,
    hostProcess: caps.host_process,
    env: Object.entries(m.env).map(([name, e]) => ({ name, type: e.type })),
  });
  const { config, secrets } = splitEnv(m, o.env ?? {});
  Object.assign(config, o.extraConfig);
  for (const [iface, exporter] of Object.entries(o.bindings ?? {}))
    config[`bind.${iface}`] = exporter;

  await mkdir(path.join(o.stateDir, "budget"), { recursive: true, mode: 0o700 });
  const audit = await AuditChain.open(o.auditDir, {
    key: o.identity.key,
    keyId: o.identity.keyId,
    sync: o.auditSync?.sync ?? "always",
    ...(o.auditSync?.intervalMs !== undefined ? { syncIntervalMs: o.auditSync.intervalMs } : {}),
    // A failed background sync has no decision waiting on it: report it as the failed write it is.
    onBackgroundFailure: (e) => o.observer?.auditFailed?.(e),
  });
  const broker = new ApprovalBroker();
  const detachApprover = attachBusApprover({ bus: o.bus, broker, capsule });
  const store = await ApprovalStore.open({
    file: o.grantsFile ?? path.join(o.stateDir, "grants.json"),
    // "Allow always" is a capability token for exactly the approved action (bound to its
    // arguments for tools and commands), verified in full — expiry, revocation — on every use.
    mintToken: async (claims) => {
      if (!o.grantIssuer) throw new Error("no grant issuer key configured for allow_always");
      return mintToken(
        {
          sub: claims.principal,
          res: [claims.resource],
          perm: [permissionOf(claims.kind)],
          exp: Math.floor(Date.now() / 1000) + 365 * 24 * 3600,
          ...(claims.argsHash ? { arg: claims.argsHash } : {}),
        },
        o.grantIssuer,
      );
    },
    checkToken: async (token, claims) => {
      if (!o.tokens) return false;
      const d = await o.tokens.verify(token, {
        principal: claims.principal,
        resource: claims.resource,
        permission: permissionOf(claims.kind),
        ...(claims.argsHash ? { argsHash: claims.argsHash } : {}),
      });
      return d.allowed;
    },
  });
  const approvals = new Approvals(store, broker);

  const ledgers = new Map<string, Promise<BudgetLedger | undefined>>();
  const limits = budgetLimits(m, o.budget, o.mode);
  const ledger = (session: string) => {
    let l = ledgers.get(session);
    if (!l) {
      l = limits
        ? BudgetLedger.open({
            dir: path.join(o.stateDir, "budget"),
            session,
            limits,
            // One durability setting for all decision records: the audit chain's and the
            // budget journal's (each reserve and settle is fsync'd unless interval is chosen).
            ...(o.auditSync?.sync === "interval" ? { sync: "interval" as const } : {}),
          })
        : Promise.resolve(undefined);
      ledgers.set(session, l);
    }
    return l;
  };

  const { exports, stop } = await startEngine(o, capsule, config, secrets);
  let sidecar: Sidecar;
  try {
    sidecar = await Sidecar.start({
      capsule,
      manifest: m,
      bus: o.bus,
      audit,
      acl,
      gate,
      tokens: o.tokens,
      requireCallerToken: o.requireCallerToken,
      ...(o.session ? { session: o.session } : {}),
      approvals,
      mode: o.mode,
      yes: o.yes ?? false,
      workspace: o.workspace,
      home: o.home,
      approvalTimeoutMs: o.approvalTimeoutMs ?? 120_000,
      ledger,
      kv: o.kv ?? new MemoryKvStore(),
      config,
      secrets,
      exports,
      logger: o.logger,
      ...(o.observer ? { observer: o.observer } : {}),
    });
  } catch (err) {
    await stop();
    detachApprover();
    await audit.close();
    throw err;
  }
  return {
    sidecar,
    audit,
    broker,
    async close() {
      await sidecar.drain();
      await stop();
      detachApprover();
      broker.close();
      for (const l of ledgers.values()) await (await l)?.close();
      await audit.close();
    },
  };
}

/** The token permission an approved action of this kind needs. */
function permissionOf(kind: string): "read" | "write" | "connect" | "execute" {
  switch (kind) {
    case "fs_read":
      return "read";
    case "fs_write":
      return "write";
    case "net":
      return "connect";
    default:
      return "execute";
  }
}

/** Declared env values: strings become config, secrets stay apart so they can be redacted. */
function splitEnv(m: Manifest, given: Readonly<Record<string, string>>) {
  const config: Record<string, string> = {};
  const secrets: Record<string, string> = {};
  for (const [name, e] of Object.entries(m.env)) {
    const value = given[name] ?? (e.type === "string" ? e.default : undefined);
    if (value === undefined) {
      if (e.required) throw new Error(`${m.package.name}: required env ${name} is not set`);
      continue;
    }
    (e.type === "secret" ? secrets : config)[name] = value;
  }
  return { config, secrets };
}

function budgetLimits(
  m: Manifest,
  given: BudgetLimitsInput | undefined,
  mode: SecurityMode,
): BudgetLimitsInput | undefined {
  if (given) return { ...given, yolo: mode === "yolo" };
  const b = m.budget;
  if (
    !b ||
    b.max_session_tokens === undefined ||
    b.max_call_tokens === undefined ||
    b.max_session_micro_usd === undefined ||
    b.max_call_micro_usd === undefined
  ) {
    return undefined;
  }
  return {
    tokens: { perCall: b.max_call_tokens, session: b.max_session_tokens },
    microUsd: { perCall: b.max_call_micro_usd, session: b.max_session_micro_usd },
    warnPercent: b.warn_at_percent,
    yolo: mode === "yolo",
  };
}

async function startEngine(
  o: AssembleOptions,
  capsule: string,
  config: Record<string, string>,
  secrets: Record<string, string>,
): Promise<{ exports: CapsuleExport[]; stop: () => Promise<void> }> {
  const engine = o.manifest.engine;
  switch (engine.type) {
    case "mcp": {
      const declared: Record<string, string> = {};
      for (const name of engine.env ?? []) {
        const v = secrets[name] ?? config[name];
        if (v !== undefined) declared[name] = v;
      }
      const target =
        engine.transport === "stdio"
          ? {
              transport: "stdio" as const,
              command: engine.command!,
              args: engine.args ?? [],
              cwd: path.join(o.packageDir, engine.cwd ?? "."),
              env: serverEnvironment(declared, path.join(o.stateDir, "home")),
            }
          : { transport: "http" as const, url: engine.url! };
      const mcp = await McpEngine.start(target, {
        name: capsule,
        callTimeoutMs: 60_000,
        maxResultBytes: 512 * 1024,
        restart: { initialMs: 200, maxMs: 10_000 },
        onLog: (e) => o.logger(e.level, e.message, { source: e.source }),
      });
      return { exports: mcpExports(mcp, capsule), stop: () => mcp.stop() };
    }
    case "static": {
      const { type: _, ...section } = engine;
      const st = await StaticEngine.load(o.packageDir, section);
      return { exports: staticExports(st, capsule), stop: async () => {} };
    }
    case "wasm": {
      const file = path.join(o.packageDir, engine.module);
      const guest =
        engine.kind === "quickjs"
          ? await QuickJsEngine.create({
              source: await readFile(file, "utf8"),
              memoryMb: engine.memory_mb,
              stackKb: engine.stack_kb,
              timeoutMs: engine.timeout_ms,
              name: capsule,
              // A provider streaming a long answer makes one host call per network read and per
              // delta; 10,000 (the engine's default) would cut a long answer off.
              ...(Object.keys(o.manifest.exports.astrid ?? {}).includes("llm")
                ? { maxHostCallsPerCall: 200_000 }
                : {}),
            })
          : await CoreWasmEngine.create({
              wasm: new Uint8Array(await readFile(file)),
              memoryMb: engine.memory_mb,
              timeoutMs: engine.timeout_ms,
              name: capsule,
            });
      return { exports: wasmExports(guest, o.manifest.handlers), stop: () => guest.stop() };
    }
  }
}
