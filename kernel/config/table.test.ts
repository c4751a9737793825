import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { parseConfigText } from "./load.js";
import { STARTER_CONFIG } from "./starter-config.js";
import {
  CONFIG_FIELDS,
  CONFIG_TABLE_END,
  CONFIG_TABLE_START,
  configTable,
  fieldOf,
  knownKeysAt,
} from "./table.js";
import { WORKSPACE_RULES } from "./workspace-rules.js";

describe("the config catalogue", () => {
  it("lists every key of the schema with placeholders for user-chosen names", () => {
    expect(CONFIG_FIELDS.map((f) => f.key)).toEqual([
      "defaults.mode",
      "defaults.orchestrator",
      "defaults.provider",
      "defaults.model",
      "budget.session_usd",
      "budget.call_usd",
      "budget.session_tokens",
      "budget.call_tokens",
      "budget.warn_at_percent",
      "approvals.timeout_seconds",
      "providers.<name>",
      "providers.<name>.base_url",
      "providers.<name>.model",
      "providers.<name>.api_key_env",
      "providers.<name>.price.<model>",
      "providers.<name>.price.<model>.input",
      "providers.<name>.price.<model>.output",
      "bindings.<importer>.<interface>",
      "capsules.enabled",
      "kv.persist",
      "daemon.idle_exit_minutes",
    ]);
    for (const f of CONFIG_FIELDS) expect(f.description, f.key).not.toBe("");
  });

  it("knows the keys under a path, through user-chosen names", () => {
    expect(knownKeysAt([])).toEqual([
      "defaults",
      "budget",
      "approvals",
      "providers",
      "bindings",
      "capsules",
      "kv",
      "daemon",
    ]);
    expect(knownKeysAt(["providers", "groq"])).toEqual([
      "base_url",
      "model",
      "api_key_env",
      "price",
    ]);
    expect(knownKeysAt(["providers", "groq", "price", "llama"])).toEqual(["input", "output"]);
    expect(fieldOf(["providers", "groq", "model"])?.key).toBe("providers.<name>.model");
  });

  it("has a workspace rule for every top-level table", () => {
    for (const top of knownKeysAt([])) {
      const covered = Object.keys(WORKSPACE_RULES).some(
        (k) => k === top || k.startsWith(`${top}.`),
      );
      expect(covered, top).toBe(true);
    }
  });
});

describe("docs/config.md", () => {
  it("contains the generated table between its markers", async () => {
    const doc = await readFile(new URL("../../docs/config.md", import.meta.url), "utf8");
    const start = doc.indexOf(CONFIG_TABLE_START);
    const end = doc.indexOf(CONFIG_TABLE_END);
    expect(start).toBeGreaterThan(-1);
    expect(end).toBeGreaterThan(start);
    expect(doc.slice(start + CONFIG_TABLE_START.length, end).trim()).toBe(configTable().trim());
  });
});

describe("the starter config", () => {
  it("parses to exactly the defaults", () => {
    expect(parseConfigText(STARTER_CONFIG, "starter").config).toEqual(
      parseConfigText("", "empty").config,
    );
  });

  it("mentions every fixed key (commented out)", () => {
    for (const f of CONFIG_FIELDS) {
      if (f.path.some((s) => s.startsWith("<"))) continue;
      expect(STARTER_CONFIG, f.key).toMatch(new RegExp(`^# ${f.path[f.path.length - 1]} = `, "m"));
    }
  });

  it("parses with each commented setting switched on", () => {
    const on = STARTER_CONFIG.replace(/^# (\[[^\]]+\]|"?[a-z_.]+"? = .*?)([ \t]+#.*)?$/gm, "$1");
    expect(on).toContain("\n[providers.anthropic]\n");
    const c = parseConfigText(on, "starter").config;
    expect(c.defaults.model).toBe("claude-sonnet-4-5");
    expect(c.providers.anthropic).toEqual(parseConfigText("", "empty").config.providers.anthropic);
    expect(c.bindings).toEqual({
      react: { "astrid.llm": "cache" },
      cache: { "astrid.llm": "anthropic" },
    });
    expect(c.capsules.enabled).toEqual(["anthropic", "react"]);
  });
});
