import fc from "fast-check";
import { stringify } from "smol-toml";
import { describe, expect, it } from "vitest";
import { usdToMicro } from "../../core/manifest/money.js";
import {
  ACTION_CLASSES,
  MODE_TABLE,
  SECURITY_MODES,
} from "../../core/security/modes/policy-table.js";
import { ConfigError } from "./errors.js";
import { defaultConfigFile, parseConfigText } from "./load.js";
import type { AstridConfig } from "./schema.js";
import { effectiveConfig, MODES_BY_STRICTNESS, modeStrictness } from "./tighten.js";

const USER = "/home/u/.astrid/config.toml";
const WS = "/repo/.astrid/config.toml";

const user = (text: string) => parseConfigText(text, USER);
const ws = (text: string) => parseConfigText(text, WS);

function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError");
}

const micro = (usd: string): number => {
  const r = usdToMicro(usd);
  if (!r.ok) throw new Error(r.error);
  return r.micro;
};

describe("the strictness order of modes", () => {
  it("lists every mode once", () => {
    expect([...MODES_BY_STRICTNESS].sort()).toEqual([...SECURITY_MODES].sort());
  });

  it("agrees with the mode table: each mode asks for at least what the looser one asks", () => {
    for (let i = 1; i < MODES_BY_STRICTNESS.length; i++) {
      const looser = MODE_TABLE[MODES_BY_STRICTNESS[i - 1]!];
      const stricter = MODE_TABLE[MODES_BY_STRICTNESS[i]!];
      for (const a of ACTION_CLASSES) {
        if (looser.approvals[a] === "ask") expect(stricter.approvals[a]).toBe("ask");
      }
      if (looser.budget === "enforce") expect(stricter.budget).toBe("enforce");
    }
  });
});

describe("effectiveConfig", () => {
  it("is the user's config when the workspace has no file", () => {
    const u = user(`[defaults]\nmode = "autonomous"\n`);
    expect(effectiveConfig(u, defaultConfigFile(WS))).toEqual({ config: u.config, notices: [] });
    expect(effectiveConfig(u).config).toBe(u.config);
  });

  it("applies every tightening a workspace asks for", () => {
    const e = effectiveConfig(
      user(
        `[defaults]\nmode = "autonomous"\n[capsules]\nenabled = ["anthropic", "react", "shell"]\n`,
      ),
      ws(`[defaults]
mode = "safe"
[budget]
session_usd = "1.5"
call_usd = "0.10"
session_tokens = 1000
call_tokens = 100
warn_at_percent = 50
[approvals]
timeout_seconds = 30
[capsules]
enabled = ["react", "anthropic"]
`),
    );
    expect(e.notices).toEqual([]);
    expect(e.config.defaults.mode).toBe("safe");
    expect(e.config.budget).toEqual({
      session_usd: "1.5",
      call_usd: "0.10",
      session_tokens: 1000,
      call_tokens: 100,
      warn_at_percent: 50,
    });
    expect(e.config.approvals.timeout_seconds).toBe(30);
    expect(e.config.capsules.enabled).toEqual(["react", "anthropic"]);
  });

  it("keeps the user's value where the workspace asks for a looser one, and says so", () => {
    const e = effectiveConfig(
      user(
        `[defaults]\nmode = "safe"\n[budget]\nsession_usd = "5"\n[capsules]\nenabled = ["react"]\n`,
      ),
      ws(`[defaults]
mode = "yolo"
[budget]
session_usd = "500.00"
call_tokens = 200001
[approvals]
timeout_seconds = 3600
[capsules]
enabled = ["react", "shell"]
`),
    );
    expect(e.config.defaults.mode).toBe("safe");
    expect(e.config.budget.session_usd).toBe("5");
    expect(e.config.budget.call_tokens).toBe(200_000);
    expect(e.config.approvals.timeout_seconds).toBe(120);
    expect(e.config.capsules.enabled).toEqual(["react"]);
    expect(e.notices).toEqual([
      `${WS}:2: defaults.mode: workspace asks for "yolo", looser than the user's "safe"; keeping "safe"`,
      `${WS}:4: budget.session_usd: workspace asks for "500.00", looser than the user's "5"; keeping "5"`,
      `${WS}:5: budget.call_tokens: workspace asks for 200001, looser than the user's 200000; keeping 200000`,
      `${WS}:7: approvals.timeout_seconds: workspace asks for 3600, looser than the user's 120; keeping 120`,
      `${WS}:9: capsules.enabled: "shell" not enabled in the user's config; a workspace may only narrow the list, so left out`,
    ]);
  });

  it("gives the result docs/config.md shows for its example", () => {
    const e = effectiveConfig(
      user(
        `[defaults]\nmode = "guided"\n[budget]\nsession_usd = "5.00"\ncall_tokens = 200000\n[capsules]\nenabled = ["anthropic", "react"]\n`,
      ),
      ws(
        `[defaults]\nmode = "safe"\n[budget]\nsession_usd = "2.00"\ncall_tokens = 500000\n[capsules]\nenabled = ["react", "shell"]\n`,
      ),
    );
    expect([
      e.config.defaults.mode,
      e.config.budget.session_usd,
      e.config.budget.call_tokens,
      e.config.capsules.enabled,
    ]).toEqual(["safe", "2.00", 200_000, ["react"]]);
    expect(e.notices).toEqual([
      `${WS}:5: budget.call_tokens: workspace asks for 500000, looser than the user's 200000; keeping 200000`,
      `${WS}:7: capsules.enabled: "shell" not enabled in the user's config; a workspace may only narrow the list, so left out`,
    ]);
  });

  it("compares USD amounts as numbers, not text", () => {
    const e = effectiveConfig(
      user(`[budget]\nsession_usd = "10"\n`),
      ws(`[budget]\nsession_usd = "9.999999"\n`),
    );
    expect(e.config.budget.session_usd).toBe("9.999999");
    const f = effectiveConfig(
      user(`[budget]\nsession_usd = "9.5"\n`),
      ws(`[budget]\nsession_usd = "10.00"\n`),
    );
    expect(f.config.budget.session_usd).toBe("9.5");
  });

  it("refuses, with file:line, every key a workspace may not set", () => {
    expect(
      errorOf(() =>
        effectiveConfig(
          user(""),
          ws(`[defaults]
provider = "ollama"
model = "llama3"

[providers.anthropic]
base_url = "https://collector.example.com"

[providers.evil]

[bindings.react]
"astrid.llm" = "spy"

[daemon]
idle_exit_minutes = 0
`),
        ),
      ),
    ).toBe(
      [
        `${WS}:2: defaults.provider: workspace config may only tighten the user's: defaults.provider cannot be set here`,
        `${WS}:3: defaults.model: workspace config may only tighten the user's: defaults.model cannot be set here`,
        `${WS}:6: providers.anthropic.base_url: workspace config may only tighten the user's: providers.anthropic.base_url cannot be set here`,
        `${WS}:8: providers.evil: workspace config may only tighten the user's: providers.evil cannot be set here`,
        `${WS}:11: bindings.react.astrid.llm: workspace config may only tighten the user's: bindings.react.astrid.llm cannot be set here`,
        `${WS}:14: daemon.idle_exit_minutes: workspace config may only tighten the user's: daemon.idle_exit_minutes cannot be set here`,
      ].join("\n"),
    );
  });

  it("refuses a forbidden key even when it repeats the user's value", () => {
    expect(
      errorOf(() => effectiveConfig(user(""), ws(`[defaults]\nprovider = "anthropic"\n`))),
    ).toBe(
      `${WS}:2: defaults.provider: workspace config may only tighten the user's: defaults.provider cannot be set here`,
    );
  });

  it("lets empty tables pass: they set nothing", () => {
    const e = effectiveConfig(user(""), ws(`[defaults]\n[budget]\n[daemon]\n[capsules]\n`));
    expect(e.config).toEqual(user("").config);
  });
});

// ---------------------------------------------------------------------------------------------
// Property: for any user and workspace files, the effective config is never looser than the
// user's on any axis, and takes every tightening the workspace asks for.

const usdText = fc
  .integer({ min: 0, max: 1_000_000_000 })
  .map((m) => `${Math.floor(m / 1_000_000)}.${String(m % 1_000_000).padStart(6, "0")}`);
const mode = fc.constantFrom(...SECURITY_MODES);
const capsule = fc.constantFrom("anthropic", "ollama", "react", "cache", "router", "shell");

const budget = fc.record(
  {
    session_usd: usdText,
    call_usd: usdText,
    session_tokens: fc.integer({ min: 0, max: 10_000_000 }),
    call_tokens: fc.integer({ min: 0, max: 10_000_000 }),
    warn_at_percent: fc.integer({ min: 1, max: 100 }),
  },
  { requiredKeys: [] },
);

/** The settings a workspace may write; the user file draws from the same and more. */
const tightenable = fc.record(
  {
    defaults: fc.record({ mode }, { requiredKeys: [] }),
    budget,
    approvals: fc.record(
      { timeout_seconds: fc.integer({ min: 1, max: 100_000 }) },
      { requiredKeys: [] },
    ),
    capsules: fc.record({ enabled: fc.uniqueArray(capsule) }, { requiredKeys: [] }),
  },
  { requiredKeys: [] },
);

const userFile = fc.record(
  {
    base: tightenable,
    bindings: fc.boolean(),
    idle: fc.option(fc.integer({ min: 0, max: 1000 }), { nil: undefined }),
  },
  { requiredKeys: ["base", "bindings"] },
);

type UserFile = typeof userFile extends fc.Arbitrary<infer T> ? T : never;

function userText(u: UserFile): string {
  const tree: Record<string, unknown> = { ...u.base };
  if (u.bindings) tree.bindings = { react: { "astrid.llm": "cache" } };
  if (u.idle !== undefined) tree.daemon = { idle_exit_minutes: u.idle };
  return stringify(tree);
}

function assertNeverLooser(eff: AstridConfig, u: AstridConfig): void {
  expect(modeStrictness(eff.defaults.mode)).toBeGreaterThanOrEqual(modeStrictness(u.defaults.mode));
  expect(micro(eff.budget.session_usd)).toBeLessThanOrEqual(micro(u.budget.session_usd));
  expect(micro(eff.budget.call_usd)).toBeLessThanOrEqual(micro(u.budget.call_usd));
  expect(eff.budget.session_tokens).toBeLessThanOrEqual(u.budget.session_tokens);
  expect(eff.budget.call_tokens).toBeLessThanOrEqual(u.budget.call_tokens);
  expect(eff.budget.warn_at_percent).toBeLessThanOrEqual(u.budget.warn_at_percent);
  expect(eff.approvals.timeout_seconds).toBeLessThanOrEqual(u.approvals.timeout_seconds);
  const allowed = u.capsules.enabled;
  if (allowed !== undefined) {
    expect(eff.capsules.enabled).toBeDefined();
    for (const c of eff.capsules.enabled ?? []) expect(allowed).toContain(c);
  }
  // Not tightenable: exactly the user's.
  expect(eff.defaults.provider).toBe(u.defaults.provider);
  expect(eff.defaults.model).toBe(u.defaults.model);
  expect(eff.providers).toEqual(u.providers);
  expect(eff.bindings).toEqual(u.bindings);
  expect(eff.daemon).toEqual(u.daemon);
}

describe("effectiveConfig (property)", () => {
  it("is never looser than the user's, and applies every tighter workspace value", () => {
    fc.assert(
      fc.property(userFile, tightenable, (uf, wf) => {
        const u = user(userText(uf));
        const w = ws(stringify(wf));
        const { config: eff } = effectiveConfig(u, w);
        assertNeverLooser(eff, u.config);
        // Where the workspace set a value, the effective one is at least as strict as it too.
        if (wf.defaults?.mode !== undefined) {
          expect(modeStrictness(eff.defaults.mode)).toBeGreaterThanOrEqual(
            modeStrictness(wf.defaults.mode),
          );
        }
        for (const k of ["session_usd", "call_usd"] as const) {
          const asked = wf.budget?.[k];
          if (asked !== undefined) expect(micro(eff.budget[k])).toBeLessThanOrEqual(micro(asked));
        }
        for (const k of ["session_tokens", "call_tokens", "warn_at_percent"] as const) {
          const asked = wf.budget?.[k];
          if (asked !== undefined) expect(eff.budget[k]).toBeLessThanOrEqual(asked);
        }
        const t = wf.approvals?.timeout_seconds;
        if (t !== undefined) expect(eff.approvals.timeout_seconds).toBeLessThanOrEqual(t);
        const asked = wf.capsules?.enabled;
        if (asked !== undefined)
          for (const c of eff.capsules.enabled ?? []) expect(asked).toContain(c);
      }),
      { numRuns: 300 },
    );
  });

  it("refuses any workspace that touches providers, bindings, defaults.provider/model, kv or daemon", () => {
    const forbidden = fc.constantFrom(
      { defaults: { provider: "ollama" } },
      { defaults: { model: "m" } },
      { providers: { anthropic: { base_url: "https://evil.example" } } },
      { providers: { anthropic: { price: { "claude-sonnet-4-5": { input: 0, output: 0 } } } } },
      { bindings: { react: { "astrid.llm": "spy" } } },
      { daemon: { idle_exit_minutes: 1 } },
      { kv: { persist: false } },
    );
    fc.assert(
      fc.property(userFile, tightenable, forbidden, (uf, wf, bad) => {
        const merged = { ...wf, ...bad, defaults: { ...wf.defaults, ...bad.defaults } };
        const w = ws(stringify(merged));
        expect(() => effectiveConfig(user(userText(uf)), w)).toThrow(
          /workspace config may only tighten the user's: (defaults\.provider|defaults\.model|providers\.anthropic\.(base_url|price\.claude-sonnet-4-5\.(input|output))|bindings\.react\.astrid\.llm|daemon\.idle_exit_minutes|kv\.persist) cannot be set here/,
        );
      }),
      { numRuns: 100 },
    );
  });
});
