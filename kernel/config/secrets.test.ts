import { describe, expect, it } from "vitest";
import { ConfigError } from "./errors.js";
import { parseConfigText } from "./load.js";
import {
  MIN_REDACTED_LENGTH,
  ProviderKeyError,
  providerKey,
  redact,
  secretEnvNames,
} from "./secrets.js";
import { effectiveConfig } from "./tighten.js";

const KEY = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
const OTHER = "gsk_0123456789abcdefghijklmnop";

const config = parseConfigText(
  `[providers.groq]
base_url = "https://api.groq.com/openai/v1"
api_key_env = "GROQ_KEY_VALUE"
`,
  "/u/config.toml",
).config;

describe("providerKey", () => {
  it("reads the key from the variable the provider names", () => {
    expect(providerKey(config, "anthropic", { ANTHROPIC_API_KEY: KEY })).toBe(KEY);
    expect(providerKey(config, "groq", { GROQ_KEY_VALUE: OTHER })).toBe(OTHER);
  });

  it("returns undefined for a provider that needs no key", () => {
    expect(providerKey(config, "ollama", {})).toBeUndefined();
  });

  it("says which variable to export when it is unset or empty", () => {
    for (const env of [{}, { ANTHROPIC_API_KEY: "" }, { ANTHROPIC_API_KEY: "  " }]) {
      expect(() => providerKey(config, "anthropic", env)).toThrow(
        new ProviderKeyError(
          "ANTHROPIC_API_KEY is not set: export it or choose another provider with --provider",
        ),
      );
    }
  });

  it("names the configured providers for an unknown one", () => {
    expect(() => providerKey(config, "antropic", {})).toThrow(
      'no provider named "antropic" (did you mean anthropic?); configured: anthropic, groq, ollama',
    );
  });
});

describe("redact", () => {
  const env = {
    ANTHROPIC_API_KEY: KEY,
    GROQ_KEY_VALUE: OTHER,
    HOME: "/home/someone",
    GH_TOKEN: "ghp_short",
  };

  it("replaces every secret value with the variable's name", () => {
    expect(redact(`auth: Bearer ${KEY}; retry with ${KEY}, x-api-key=${OTHER}`, env, config)).toBe(
      "auth: Bearer [redacted:ANTHROPIC_API_KEY]; retry with [redacted:ANTHROPIC_API_KEY], x-api-key=[redacted:GROQ_KEY_VALUE]",
    );
  });

  it("finds secret variables by name even without a config", () => {
    expect(secretEnvNames(env)).toEqual(["ANTHROPIC_API_KEY", "GH_TOKEN"]);
    expect(secretEnvNames(env, config)).toEqual([
      "ANTHROPIC_API_KEY",
      "GH_TOKEN",
      "GROQ_KEY_VALUE",
    ]);
    expect(redact(`token ghp_short, key ${OTHER}`, env)).toBe(
      `token [redacted:GH_TOKEN], key ${OTHER}`,
    );
  });

  it("leaves non-secret variables and values too short to be keys alone", () => {
    expect(redact("/home/someone/x", env, config)).toBe("/home/someone/x");
    const short = "x".repeat(MIN_REDACTED_LENGTH - 1);
    expect(redact(`a ${short}`, { MY_TOKEN: short })).toBe(`a ${short}`);
  });

  it("replaces a key that contains another key whole", () => {
    const inner = "abcdefgh1234";
    const outer = `${inner}-more-secret`;
    expect(redact(outer, { A_TOKEN: inner, B_TOKEN: outer })).toBe("[redacted:B_TOKEN]");
  });
});

describe("keys never reach the config or its errors", () => {
  it("does not put the key into the serialised effective config", () => {
    const env = { ANTHROPIC_API_KEY: KEY };
    const user = parseConfigText("", "/u/config.toml");
    const ws = parseConfigText(`[budget]\nsession_usd = "1"\n`, "/w/.astrid/config.toml");
    const eff = effectiveConfig(user, ws);
    expect(providerKey(eff.config, "anthropic", env)).toBe(KEY);
    const text = JSON.stringify(eff);
    expect(text).toContain('"api_key_env":"ANTHROPIC_API_KEY"');
    expect(text).not.toContain(KEY);
  });

  it("does not repeat a key written in the file in any error", () => {
    for (const text of [
      `[providers.anthropic]\napi_key = "${KEY}"\n`,
      `[providers.anthropic]\napi_key_env = "${KEY}"\n`,
      `[providers.anthropic]\nbase_url = "${KEY}"\n`,
      `[providers.anthropic]\nmodel = ["${KEY}"]\n`,
      `[defaults]\nmode = "${KEY}"\n`,
      `unknown = "${KEY}"\n`,
      `[budget]\nsession_usd = "${KEY}"\n`,
      `x = ${KEY}\n`,
    ]) {
      let message = "";
      try {
        parseConfigText(text, "/u/config.toml");
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        message = (e as Error).message;
      }
      expect(message).not.toBe("");
      expect(message).not.toContain(KEY);
      expect(message).not.toContain("AbCdEfGh");
    }
  });
});
