import { execFileSync } from "node:child_process";
import { mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "./errors.js";
import { defaultConfigFile, loadConfigFile, MAX_CONFIG_BYTES, parseConfigText } from "./load.js";

const FILE = "/home/u/.astrid/config.toml";
const KEY = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";

function errorOf(text: string): string {
  try {
    parseConfigText(text, FILE);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError");
}

describe("parseConfigText", () => {
  it("fills every default and the built-in providers for an empty file", () => {
    const c = parseConfigText("", FILE).config;
    expect(c.defaults).toEqual({ mode: "guided", orchestrator: "react", provider: "anthropic" });
    expect(c.budget).toEqual({
      session_usd: "5.00",
      call_usd: "0.50",
      session_tokens: 2_000_000,
      call_tokens: 200_000,
      warn_at_percent: 80,
    });
    expect(c.approvals).toEqual({ timeout_seconds: 120 });
    expect(Object.keys(c.providers)).toEqual(["anthropic", "ollama", "replay"]);
    expect(c.providers.anthropic?.api_key_env).toBe("ANTHROPIC_API_KEY");
    expect(c.bindings).toEqual({});
    expect(c.capsules).toEqual({});
    expect(c.daemon).toEqual({ idle_exit_minutes: 30 });
    expect(c.kv).toEqual({ persist: true });
  });

  it("reads kv.persist as a boolean, and says so for anything else", () => {
    expect(parseConfigText("[kv]\npersist = false\n", FILE).config.kv.persist).toBe(false);
    expect(errorOf('[kv]\npersist = "no"\n')).toContain(
      `${FILE}:2: kv.persist: expected true or false, got "no"`,
    );
    expect(errorOf("[kv]\npersit = false\n")).toContain(
      `${FILE}:2: kv.persit: unknown key (did you mean persist?)`,
    );
  });

  it("reads a full file; a provider table replaces the built-in of that name", () => {
    const c = parseConfigText(
      `[defaults]
mode = "safe"
provider = "openai"
model = "gpt-5"

[budget]
session_usd = "12.5"
call_usd = "0.000001"
session_tokens = 10
call_tokens = 5
warn_at_percent = 50

[approvals]
timeout_seconds = 30

[providers.openai]
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
[providers.openai.price."gpt-5"]
input = 1250000
output = 10000000

[providers.ollama]
base_url = "http://localhost:11434"
model = "llama3"

[bindings.react]
"astrid.llm" = "cache"
[bindings.cache]
"astrid.llm" = "router"

[capsules]
enabled = ["openai", "react", "cache", "router"]

[daemon]
idle_exit_minutes = 0
`,
      FILE,
    ).config;
    expect(c.defaults).toEqual({
      mode: "safe",
      orchestrator: "react",
      provider: "openai",
      model: "gpt-5",
    });
    expect(c.budget.session_usd).toBe("12.5");
    expect(c.providers.openai).toEqual({
      base_url: "https://api.openai.com/v1",
      api_key_env: "OPENAI_API_KEY",
      price: { "gpt-5": { input: 1_250_000, output: 10_000_000 } },
    });
    expect(c.providers.ollama).toEqual({
      base_url: "http://localhost:11434",
      model: "llama3",
      price: {},
    });
    expect(c.providers.anthropic?.base_url).toBe("https://api.anthropic.com");
    expect(c.bindings).toEqual({
      react: { "astrid.llm": "cache" },
      cache: { "astrid.llm": "router" },
    });
    expect(c.capsules.enabled).toEqual(["openai", "react", "cache", "router"]);
    expect(c.daemon.idle_exit_minutes).toBe(0);
  });

  it("names file:line, field and a did-you-mean for unknown keys, in file order", () => {
    expect(
      errorOf(`[defaults]
mod = "safe"

[budget]
sesion_usd = "1.00"

[providers.anthropic]
api_key_envv = "X"

[approval]
timeout_seconds = 5
`),
    ).toBe(
      [
        `${FILE}:2: defaults.mod: unknown key (did you mean mode?)`,
        `${FILE}:5: budget.sesion_usd: unknown key (did you mean session_usd?)`,
        `${FILE}:8: providers.anthropic.api_key_envv: unknown key (did you mean api_key_env?)`,
        `${FILE}:10: approval: unknown key (did you mean approvals?)`,
      ].join("\n"),
    );
  });

  it("says what was expected for each bad value", () => {
    expect(
      errorOf(`[defaults]
mode = "reckless"
provider = "Anthropic"

[budget]
session_usd = 5.0
call_usd = "1.2345678"
session_tokens = -1
call_tokens = 1.5
warn_at_percent = 101

[approvals]
timeout_seconds = 0

[providers.local]
base_url = "http://10.0.0.2:11434"

[bindings.react]
astrid.llm = "cache"
[bindings.cache]
"llm" = "router"
"astrid.tool" = "Router"

[capsules]
enabled = "react"
`),
    ).toBe(
      [
        `${FILE}:2: defaults.mode: expected one of "safe", "guided", "autonomous", "yolo", got "reckless"`,
        `${FILE}:3: defaults.provider: expected a capsule name (a-z first, then a-z, 0-9 or -, at most 63), got "Anthropic"`,
        `${FILE}:6: budget.session_usd: expected a quoted decimal USD amount like "0.50", got 5`,
        `${FILE}:7: budget.call_usd: expected a decimal USD amount with at most 6 decimals like "5.00", got "1.2345678"`,
        `${FILE}:8: budget.session_tokens: expected at least 0, got -1`,
        `${FILE}:9: budget.call_tokens: expected an integer, got 1.5`,
        `${FILE}:10: budget.warn_at_percent: expected at most 100, got 101`,
        `${FILE}:13: approvals.timeout_seconds: expected at least 1, got 0`,
        `${FILE}:16: providers.local.base_url: expected an https:// URL (http:// only for localhost, 127.0.0.1 or [::1]): the request carries the API key and the prompt`,
        `${FILE}:19: bindings.react.astrid: expected an interface like "astrid.llm"; quote it, or TOML reads the dot as a nested table: "astrid.<interface>" = "<capsule>"`,
        `${FILE}:21: bindings.cache.llm: expected an interface like "astrid.llm" (quoted), got "llm"`,
        `${FILE}:22: bindings.cache.astrid.tool: expected a capsule name (a-z first, then a-z, 0-9 or -, at most 63), got "Router"`,
        `${FILE}:25: capsules.enabled: expected a list, got "react"`,
      ].join("\n"),
    );
  });

  it("refuses a default provider that has no table, suggesting the near one", () => {
    expect(errorOf(`[defaults]\nprovider = "antropic"\n`)).toBe(
      `${FILE}:2: defaults.provider: no provider named "antropic" (did you mean anthropic?); add a [providers.antropic] table or choose one of anthropic, ollama, replay`,
    );
  });

  it("reports TOML syntax errors with line and column and without the source line", () => {
    expect(errorOf(`[budget]\nsession_usd = ${KEY}\n`)).toBe(
      `${FILE}:2: invalid TOML: invalid value (column 15)`,
    );
  });
});

describe("literal API keys", () => {
  const cases: [string, string][] = [
    [
      `[providers.anthropic]\napi_key = "${KEY}"\n`,
      `${FILE}:2: providers.anthropic.api_key: a literal API key is refused: keys come from the environment and are never written to disk, logs or audit; export it (e.g. ANTHROPIC_API_KEY=...) and name the variable with api_key_env in [providers.<name>]`,
    ],
    [
      `[providers.anthropic]\napi_key_env = "${KEY}"\n`,
      `${FILE}:2: providers.anthropic.api_key_env: this value looks like an API key and is refused: keys come from the environment and are never written to disk, logs or audit; export it (e.g. ANTHROPIC_API_KEY=...) and name the variable with api_key_env in [providers.<name>]`,
    ],
    [
      // Not a known key shape, but not a variable name either: refused without repeating it.
      `[providers.anthropic]\napi_key_env = "my-secret-key-value-123"\n`,
      `${FILE}:2: providers.anthropic.api_key_env: expected the NAME of an environment variable such as ANTHROPIC_API_KEY (A-Z, 0-9, _), not the key itself`,
    ],
    [
      `[providers.openai]\nbase_url = "https://user:my-secret-password@api.openai.com"\n`,
      `${FILE}:2: providers.openai.base_url: expected a URL without user:password@: credentials are never written to the config file; name an environment variable with api_key_env`,
    ],
    [
      `token = "my-secret-token-value"\n`,
      `${FILE}:1: token: a literal API key is refused: keys come from the environment and are never written to disk, logs or audit; export it (e.g. ANTHROPIC_API_KEY=...) and name the variable with api_key_env in [providers.<name>]`,
    ],
    [
      `[defaults]\nmodel = "${KEY}"\n`,
      `${FILE}:2: defaults.model: this value looks like an API key and is refused: keys come from the environment and are never written to disk, logs or audit; export it (e.g. ANTHROPIC_API_KEY=...) and name the variable with api_key_env in [providers.<name>]`,
    ],
    [
      `[providers.openai]\nmodel = 7\nbase_url = "not a url my-secret-password"\n`,
      `${FILE}:2: providers.openai.model: expected a string, got 7\n${FILE}:3: providers.openai.base_url: expected a URL like "https://api.example.com"`,
    ],
  ];
  it.each(cases)("refuses %j without repeating the value", (text, message) => {
    const got = errorOf(text);
    expect(got).toBe(message);
    expect(got).not.toContain(KEY);
    expect(got).not.toContain("my-secret");
  });
});

describe("loadConfigFile", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "astrid-config-load-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("gives the defaults for a missing file, marked as not existing", async () => {
    const f = await loadConfigFile(join(dir, "missing.toml"));
    expect(f.exists).toBe(false);
    expect(f.config).toEqual(defaultConfigFile().config);
  });

  it("reads a real file and names it in errors", async () => {
    const p = join(dir, "config.toml");
    await writeFile(p, `[daemon]\nidle_exit_minutes = 5\n`);
    expect((await loadConfigFile(p)).config.daemon.idle_exit_minutes).toBe(5);
    await writeFile(p, `[daemon]\nidle_exit_minute = 5\n`);
    await expect(loadConfigFile(p)).rejects.toThrow(
      `${p}:2: daemon.idle_exit_minute: unknown key (did you mean idle_exit_minutes?)`,
    );
  });

  it("reads only regular files of sane size, instead of treating them as missing", async () => {
    await expect(loadConfigFile(dir)).rejects.toThrow(
      `${dir}: cannot read config file: not a regular file`,
    );
    const fifo = join(dir, "fifo.toml");
    execFileSync("mkfifo", [fifo]);
    await expect(loadConfigFile(fifo)).rejects.toThrow(
      `${fifo}: cannot read config file: not a regular file`,
    );
    const zero = join(dir, "zero.toml");
    await symlink("/dev/zero", zero);
    await expect(loadConfigFile(zero)).rejects.toThrow(
      `${zero}: cannot read config file: not a regular file`,
    );
    const big = join(dir, "big.toml");
    await writeFile(big, `# ${"x".repeat(MAX_CONFIG_BYTES)}\n`);
    await expect(loadConfigFile(big)).rejects.toThrow(
      `${big}: cannot read config file: ${MAX_CONFIG_BYTES + 3} bytes, expected at most ${MAX_CONFIG_BYTES}`,
    );
  });
});
