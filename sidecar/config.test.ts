import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CONFIG_TABLE_END,
  CONFIG_TABLE_START,
  loadSidecarConfig,
  SIDECAR_CONFIG_FIELDS,
  type SidecarConfig,
  SidecarConfigError,
  sidecarConfigTable,
  sidecarHelp,
} from "./config.js";

/** The smallest valid flag set: everything required, on the embedded bus. */
const BASE = [
  "--package-dir",
  "/pkg",
  "--identity-key-file",
  "/keys/id.pem",
  "--identity-key-id",
  "sidecar-1",
  "--bus-kind",
  "embedded",
  "--audit-dir",
  "/audit",
  "--revocation-kind",
  "file",
  "--revocation-path",
  "/rev.json",
  "--trusted-issuer-keys",
  "/keys/issuer.pem",
];

const WITHOUT_REVOCATION = [...BASE.slice(0, 10), ...BASE.slice(14)];

const FILE_OK = `packageDir = "/p"
identityKeyFile = "/k"
identityKeyId = "k"
auditDir = "/a"
trustedIssuerKeys = ["/i1"]
mode = "guided"

[bus]
kind = "nats"
url = "nats://nats:4222"
user = "capsule-a"

[revocation]
kind = "kv"
bucket = "revoked"

[http]
port = 9000
`;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "astrid-sidecar-config-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, text: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, text);
  return p;
}

async function load(argv: string[], env: Record<string, string> = {}): Promise<SidecarConfig> {
  const r = await loadSidecarConfig({ argv, env });
  if (r.kind !== "config") throw new Error("expected a config");
  return r.config;
}

async function errorOf(argv: string[], env: Record<string, string> = {}): Promise<string> {
  try {
    await loadSidecarConfig({ argv, env });
  } catch (e) {
    expect(e).toBeInstanceOf(SidecarConfigError);
    return (e as Error).message;
  }
  throw new Error("expected loadSidecarConfig to fail");
}

describe("loadSidecarConfig: sources and precedence", () => {
  it("fills defaults around the required flags", async () => {
    expect(await load(BASE)).toEqual({
      packageDir: "/pkg",
      identityKeyFile: "/keys/id.pem",
      identityKeyId: "sidecar-1",
      bus: { kind: "embedded" },
      auditDir: "/audit",
      audit: { sync: "always", syncIntervalMs: 10 },
      revocation: { kind: "file", path: "/rev.json" },
      trustedIssuerKeys: ["/keys/issuer.pem"],
      tokens: { required: true },
      mode: "safe",
      approvalTimeoutMs: 120_000,
      http: { host: "127.0.0.1", port: 9464 },
      bindings: [],
      settings: [],
      kv: { kind: "local" },
      task: { timeoutMs: 600_000 },
      logLevel: "info",
      drainTimeoutMs: 30_000,
    });
  });

  it("reads a TOML file named by --config or ASTRID_SIDECAR_CONFIG", async () => {
    const p = await file("ok.toml", FILE_OK);
    const viaFlag = await load(["--config", p]);
    expect(viaFlag.bus).toEqual({ kind: "nats", url: "nats://nats:4222", user: "capsule-a" });
    expect(viaFlag.revocation).toEqual({ kind: "kv", bucket: "revoked" });
    expect(viaFlag.http).toEqual({ host: "127.0.0.1", port: 9000 });
    expect(viaFlag.mode).toBe("guided");
    expect(await load([], { ASTRID_SIDECAR_CONFIG: p })).toEqual(viaFlag);
    const r = await loadSidecarConfig({ argv: [`--config=${p}`], env: {} });
    expect(r.kind === "config" && r.configFile).toBe(p);
  });

  it("lets the environment override the file and flags override both", async () => {
    const p = await file("prec.toml", FILE_OK);
    const env = {
      ASTRID_MODE: "autonomous",
      ASTRID_HTTP_PORT: "9100",
      ASTRID_BUS_USER: "env-user",
    };
    const fromEnv = await load(["--config", p], env);
    expect(fromEnv.mode).toBe("autonomous");
    expect(fromEnv.http.port).toBe(9100);
    expect(fromEnv.bus).toEqual({ kind: "nats", url: "nats://nats:4222", user: "env-user" });
    const fromFlags = await load(["--config", p, "--mode", "yolo", "--http-port=0"], env);
    expect(fromFlags.mode).toBe("yolo");
    expect(fromFlags.http.port).toBe(0);
  });

  it("drops a lower layer's union fields when a higher layer switches the kind", async () => {
    const p = await file("switch.toml", FILE_OK);
    const c = await load(["--config", p, "--bus-kind", "embedded"], {
      ASTRID_REVOCATION_KIND: "file",
      ASTRID_REVOCATION_PATH: "/r",
    });
    expect(c.bus).toEqual({ kind: "embedded" });
    expect(c.revocation).toEqual({ kind: "file", path: "/r" });
  });

  it("parses integers, booleans and lists from text; a list flag repeats, its env is comma-separated", async () => {
    const c = await load(
      [
        ...WITHOUT_REVOCATION,
        "--trusted-issuer-keys",
        "/keys/second.pem",
        "--tokens-required",
        "false",
        "--revocation-kind",
        "none",
      ],
      { ASTRID_DRAIN_TIMEOUT_MS: "500", ASTRID_BUDGET_MAX_SESSION_USD: "5.00" },
    );
    expect(c.trustedIssuerKeys).toEqual(["/keys/issuer.pem", "/keys/second.pem"]);
    expect(c.tokens.required).toBe(false);
    expect(c.revocation).toEqual({ kind: "none" });
    expect(c.drainTimeoutMs).toBe(500);
    expect(c.budget).toEqual({ maxSessionUsd: "5.00" });
    const fromEnv = await load(BASE.slice(0, -2), { ASTRID_TRUSTED_ISSUER_KEYS: "/a.pem, /b.pem" });
    expect(fromEnv.trustedIssuerKeys).toEqual(["/a.pem", "/b.pem"]);
  });

  it("treats an empty environment variable as unset and ignores unrelated ASTRID_ variables", async () => {
    const c = await load(BASE, { ASTRID_MODE: "", ASTRID_DAEMON_SOCKET: "/run/x", PATH: "/bin" });
    expect(c.mode).toBe("safe");
  });

  it("returns the help text for --help even beside bad flags", async () => {
    const r = await loadSidecarConfig({ argv: ["--nonsense", "--help"], env: {} });
    expect(r).toEqual({ kind: "help", text: sidecarHelp() });
  });
});

describe("loadSidecarConfig: errors name the source, the field and what was expected", () => {
  it("lists every missing required field with the ways to set it", async () => {
    expect(await errorOf([])).toBe(
      [
        "packageDir: required (set --package-dir, ASTRID_PACKAGE_DIR or packageDir in the config file)",
        "identityKeyFile: required (set --identity-key-file, ASTRID_IDENTITY_KEY_FILE or identityKeyFile in the config file)",
        "identityKeyId: required (set --identity-key-id, ASTRID_IDENTITY_KEY_ID or identityKeyId in the config file)",
        "bus: required (set --bus-kind, ASTRID_BUS_KIND or bus.kind in the config file)",
        "auditDir: required (set --audit-dir, ASTRID_AUDIT_DIR or auditDir in the config file)",
        "revocation: required (set --revocation-kind, ASTRID_REVOCATION_KIND or revocation.kind in the config file)",
      ].join("\n"),
    );
  });

  it("names the file and line of a bad or unknown TOML key, with a suggestion", async () => {
    const p = await file(
      "bad-keys.toml",
      FILE_OK.replace('mode = "guided"', 'mode = "fast"').replace("port = 9000", "prot = 9000"),
    );
    expect(await errorOf(["--config", p])).toBe(
      [
        `${p}:6: mode: expected one of "safe", "guided", "autonomous", "yolo", got "fast"`,
        `${p}:18: http.prot: unknown key (did you mean port?)`,
      ].join("\n"),
    );
  });

  it("names the expected type of a TOML value of the wrong type", async () => {
    const p = await file(
      "types.toml",
      [
        'packageDir = "/p"',
        'identityKeyFile = "/k"',
        'identityKeyId = "k"',
        'auditDir = "/a"',
        'trustedIssuerKeys = "/i1"',
        "http = 5",
        'bus = { kind = "embedded" }',
        "[tokens]",
        'required = "yes"',
        "[revocation]",
        'kind = "kv"',
        "[budget]",
        "maxCallUsd = 0.5",
      ].join("\n"),
    );
    expect(await errorOf(["--config", p])).toBe(
      [
        `${p}:11: revocation.bucket: required (set --revocation-bucket, ASTRID_REVOCATION_BUCKET or revocation.bucket in the config file)`,
        `${p}:5: trustedIssuerKeys: expected a list of file paths, got "/i1"`,
        `${p}:9: tokens.required: expected true or false, got "yes"`,
        `${p}:13: budget.maxCallUsd: expected a quoted decimal USD amount like "0.50", got 0.5`,
        `${p}:6: http: expected a table, got 5`,
      ].join("\n"),
    );
  });

  it("reports a TOML syntax error at its line", async () => {
    const p = await file("syntax.toml", 'packageDir = "/p"\nauditDir = \n');
    expect(await errorOf(["--config", p])).toBe(`${p}:2: invalid TOML: invalid value (column 12)`);
  });

  it("says when the config file cannot be read", async () => {
    const p = join(dir, "missing.toml");
    expect(await errorOf([], { ASTRID_SIDECAR_CONFIG: p })).toBe(
      `env ASTRID_SIDECAR_CONFIG: cannot read config file ${p}: ENOENT: no such file or directory, open '${p}'`,
    );
  });

  it("names the environment variable and flag of a bad value", async () => {
    expect(
      await errorOf(
        [...BASE, "--budget-max-call-usd", "1.2345678", "--http-port", "-1", "--session", ""],
        { ASTRID_DRAIN_TIMEOUT_MS: "soon", ASTRID_TOKENS_REQUIRED: "yes" },
      ),
    ).toBe(
      [
        'env ASTRID_DRAIN_TIMEOUT_MS: drainTimeoutMs: expected an integer, got "soon"',
        'env ASTRID_TOKENS_REQUIRED: tokens.required: expected true or false, got "yes"',
        'flag --session: session: expected a non-empty string, got ""',
        'flag --budget-max-call-usd: budget.maxCallUsd: expected a decimal USD amount with at most 6 decimals like "5.00", got "1.2345678"',
        "flag --http-port: http.port: expected at least 0, got -1",
      ].join("\n"),
    );
  });

  it("refuses unknown flags and near-miss variables with a did-you-mean, and stray arguments", async () => {
    expect(
      await errorOf([...BASE, "--pakage-dir", "/x", "stray", "--audit-dir"], {
        ASTRID_BUS_ULR: "nats://x",
      }),
    ).toBe(
      [
        "flag --pakage-dir: unknown flag (did you mean --package-dir?); see --help",
        'argument "stray": unexpected argument; every setting is a --flag (see --help)',
        "flag --audit-dir: auditDir: expected a value after --audit-dir",
        "env ASTRID_BUS_ULR: unknown variable (did you mean ASTRID_BUS_URL or ASTRID_BUS_USER?)",
      ].join("\n"),
    );
  });

  it("never takes a password inline: not from argv, the environment or the file", async () => {
    const p = await file(
      "inline-secret.toml",
      FILE_OK.replace('user = "capsule-a"', 'user = "capsule-a"\npassword = "hunter2"'),
    );
    expect(
      await errorOf([...BASE, "--password", "hunter2", "--bus-password=hunter2"], {
        ASTRID_BUS_PASSWORD: "hunter2",
        ASTRID_OTHER_TOOL_SECRET: "not ours",
      }),
    ).toBe(
      [
        "flag --password: secrets are never taken on the command line (any local user can read it with ps); write it to a file and pass --bus-password-file",
        "flag --bus-password: secrets are never taken on the command line (any local user can read it with ps); write it to a file and pass --bus-password-file",
        "env ASTRID_BUS_PASSWORD: secrets are never taken inline, only from files; write it to a file and set ASTRID_BUS_PASSWORD_FILE",
      ].join("\n"),
    );
    const fromFile = await errorOf(["--config", p]);
    expect(fromFile).toBe(
      `${p}:12: bus.password: secrets are never taken inline, only from files; write it to a file and set bus.passwordFile`,
    );
    expect(fromFile).not.toContain("hunter2");
  });

  it("refuses a field that belongs to another kind of the union", async () => {
    expect(await errorOf([...BASE, "--bus-url", "nats://a:4222"])).toBe(
      'flag --bus-url: bus.url: unknown key for bus.kind = "embedded"',
    );
  });

  it("fails closed: revocation none only without required tokens", async () => {
    expect(await errorOf([...WITHOUT_REVOCATION, "--revocation-kind", "none"])).toBe(
      'flag --revocation-kind: revocation.kind: expected "file" or "kv" while tokens.required is true: without a revocation list a revoked token would still be accepted',
    );
  });

  it("fails closed: required tokens need at least one trusted issuer key", async () => {
    expect(await errorOf(BASE.slice(0, -2))).toBe(
      "trustedIssuerKeys: expected at least one issuer key file while tokens.required is true: no token could be verified",
    );
  });

  it("checks NATS URLs and bounds numbers", async () => {
    const nats = BASE.map((a) => (a === "embedded" ? "nats" : a));
    expect(await errorOf([...nats, "--bus-url", "http://x", "--budget-warn-percent", "101"])).toBe(
      [
        'flag --bus-url: bus.url: expected a URL starting with "nats://", "tls://" or "ws(s)://"',
        "flag --budget-warn-percent: budget.warnPercent: expected at most 100, got 101",
      ].join("\n"),
    );
  });
});

const TASK = [
  "--session",
  "s-1",
  "--principal",
  "user:alice",
  "--task-text",
  "summarise the README",
  "--task-token-file",
  "/etc/astrid/session/token",
  "--task-result-file",
  "/dev/termination-log",
];

describe("loadSidecarConfig: bindings, settings, kv and task mode", () => {
  it("reads bindings and settings from repeated flags and comma-separated variables", async () => {
    const c = await load([
      ...BASE,
      "--bindings",
      "astrid.llm=cache",
      "--bindings=astrid.tool=fs",
      "--settings",
      "max_steps=8",
    ]);
    expect(c.bindings).toEqual(["astrid.llm=cache", "astrid.tool=fs"]);
    expect(c.settings).toEqual(["max_steps=8"]);
    const e = await load(BASE, {
      ASTRID_BINDINGS: "astrid.llm=cache, astrid.tool=fs",
      ASTRID_SETTINGS: "tool_capsules=fs,shell,max_steps=8,empty=",
    });
    expect(e.bindings).toEqual(["astrid.llm=cache", "astrid.tool=fs"]);
    // A value may hold commas: the contract's `tool_capsules=<a,b>` is one setting.
    expect(e.settings).toEqual(["tool_capsules=fs,shell", "max_steps=8", "empty="]);
  });

  it("names every bad binding and setting entry", async () => {
    expect(
      await errorOf(BASE, {
        ASTRID_BINDINGS: "llm,astrid.llm=cache.>,astrid.llm=a,astrid.llm=b",
        ASTRID_SETTINGS: "fs,bind.astrid.llm=x,a=1,a=2, =3",
      }),
    ).toBe(
      [
        'env ASTRID_BINDINGS: bindings: entry "llm": expected iface=capsule, e.g. astrid.llm=cache',
        'env ASTRID_BINDINGS: bindings: entry "astrid.llm=cache.>": expected a capsule name matching ^[a-z][a-z0-9-]{0,62}$ after "=", got "cache.>"',
        'env ASTRID_BINDINGS: bindings: entry "astrid.llm=b": astrid.llm is bound twice (to a and b)',
        'env ASTRID_SETTINGS: settings: entry "fs": expected key=value, e.g. tool_capsules=fs,shell',
        'env ASTRID_SETTINGS: settings: entry "bind.astrid.llm=x": bind.* keys are set through bindings, not settings',
        'env ASTRID_SETTINGS: settings: entry "a=2": a is set twice',
        'env ASTRID_SETTINGS: settings: entry "=3": expected a key matching ^[A-Za-z_][A-Za-z0-9_.-]*$ before "=", got ""',
      ].join("\n"),
    );
    expect(await errorOf([...BASE, "--bindings", "Astrid=x"])).toBe(
      'flag --bindings: bindings: entry "Astrid=x": expected an interface like astrid.llm before "=", got "Astrid"',
    );
  });

  it("keeps audit sync always by default; takes interval with its bound interval", async () => {
    expect((await load(BASE)).audit).toEqual({ sync: "always", syncIntervalMs: 10 });
    const c = await load([...BASE, "--audit-sync", "interval"], {
      ASTRID_AUDIT_SYNC_INTERVAL_MS: "25",
    });
    expect(c.audit).toEqual({ sync: "interval", syncIntervalMs: 25 });
    const f = await load([
      "--config",
      await file("audit.toml", `${FILE_OK}\n[audit]\nsync = "interval"\n`),
    ]);
    expect(f.audit).toEqual({ sync: "interval", syncIntervalMs: 10 });
    // Beyond a second, "interval" would quietly stop being durable in any useful sense.
    expect(
      await errorOf([...BASE, "--audit-sync", "sometimes", "--audit-sync-interval-ms", "5000"]),
    ).toBe(
      [
        'flag --audit-sync: audit.sync: expected one of "always", "interval", got "sometimes"',
        "flag --audit-sync-interval-ms: audit.syncIntervalMs: expected at most 1000, got 5000",
      ].join("\n"),
    );
  });

  it("takes kv.kind jetstream with an optional bucket, only on NATS", async () => {
    const c = await load(["--config", await file("kv.toml", FILE_OK), "--kv-kind", "jetstream"]);
    expect(c.kv).toEqual({ kind: "jetstream" });
    const b = await load(["--config", await file("kv2.toml", FILE_OK)], {
      ASTRID_KV_KIND: "jetstream",
      ASTRID_KV_BUCKET: "astrid-kv-cache",
    });
    expect(b.kv).toEqual({ kind: "jetstream", bucket: "astrid-kv-cache" });
    expect(await errorOf([...BASE, "--kv-kind", "jetstream"])).toBe(
      'flag --kv-kind: kv.kind: expected "local" while bus.kind is not "nats": a JetStream bucket needs NATS',
    );
    expect(await errorOf([...BASE, "--kv-kind", "redis"])).toBe(
      'flag --kv-kind: kv.kind: expected one of "local", "jetstream", got "redis"',
    );
  });

  it("reads task mode from ASTRID_TASK_* with the timeout defaulting to ten minutes", async () => {
    const c = await load(BASE, {
      ASTRID_SESSION: "s-1",
      ASTRID_PRINCIPAL: "user:alice",
      ASTRID_TASK_TEXT: "summarise the README",
      ASTRID_TASK_TOKEN_FILE: "/etc/astrid/session/token",
      ASTRID_TASK_RESULT_FILE: "/dev/termination-log",
    });
    expect(c.task).toEqual({
      text: "summarise the README",
      tokenFile: "/etc/astrid/session/token",
      resultFile: "/dev/termination-log",
      timeoutMs: 600_000,
    });
    expect((await load([...BASE, ...TASK, "--task-timeout-ms", "5000"])).task.timeoutMs).toBe(5000);
  });

  it("refuses a task without session, principal, token file or result file, all at once", async () => {
    expect(await errorOf([...BASE, "--task-text", "go"])).toBe(
      [
        "session: required with task.text (set --session, ASTRID_SESSION or session in the config file)",
        "principal: required with task.text (set --principal, ASTRID_PRINCIPAL or principal in the config file)",
        "flag --task-text: task.tokenFile: required with task.text (set --task-token-file, ASTRID_TASK_TOKEN_FILE or task.tokenFile in the config file)",
        "flag --task-text: task.resultFile: required with task.text (set --task-result-file, ASTRID_TASK_RESULT_FILE or task.resultFile in the config file)",
      ].join("\n"),
    );
  });
});

describe("generated help and docs", () => {
  it("--help lists every flag with its environment variable and default", () => {
    const help = sidecarHelp();
    for (const f of SIDECAR_CONFIG_FIELDS) {
      const at = help.indexOf(`  ${f.flag} `);
      expect(at, f.flag).toBeGreaterThan(0);
      const description = help.slice(at).split("\n")[1]!;
      expect(description).toContain(`Env ${f.env}.`);
      if (f.default !== undefined && !Array.isArray(f.default)) {
        expect(description).toContain(`Default ${String(f.default)}.`);
      }
    }
    expect(help).toContain("  --http-port INTEGER\n");
    expect(help).toContain("Env ASTRID_HTTP_PORT. Default 9464.");
    expect(help).toContain("  --mode safe|guided|autonomous|yolo\n");
    expect(help).toContain("  --config FILE\n      TOML config file. Env ASTRID_SIDECAR_CONFIG.");
  });

  it("derives one flag and one variable per field from its path", () => {
    const names = SIDECAR_CONFIG_FIELDS.map((f) => [f.key, f.flag, f.env]);
    expect(names).toContainEqual(["packageDir", "--package-dir", "ASTRID_PACKAGE_DIR"]);
    expect(names).toContainEqual([
      "bus.passwordFile",
      "--bus-password-file",
      "ASTRID_BUS_PASSWORD_FILE",
    ]);
    expect(names).toContainEqual([
      "budget.maxSessionUsd",
      "--budget-max-session-usd",
      "ASTRID_BUDGET_MAX_SESSION_USD",
    ]);
    expect(new Set(names.map((n) => n[1])).size).toBe(names.length);
  });

  it("docs/sidecar.md carries the generated configuration table", async () => {
    const doc = await readFile(new URL("../docs/sidecar.md", import.meta.url), "utf8");
    const start = doc.indexOf(CONFIG_TABLE_START);
    const end = doc.indexOf(CONFIG_TABLE_END);
    expect(start).toBeGreaterThan(0);
    expect(doc.slice(start + CONFIG_TABLE_START.length, end).trim()).toBe(
      sidecarConfigTable().trim(),
    );
  });
});
