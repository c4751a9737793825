/**
 * The schema of `config.toml` — the user's (`~/.astrid/config.toml`) and a workspace's
 * (`<workspace>/.astrid/config.toml`) alike. It is the single source of truth: the TypeScript
 * type, validation and the table in docs/config.md (`configTable()`) all come from it.
 *
 * Every table is strict: a misspelt limit (`sesion_usd`) silently falling back to its default
 * would look like a cap while not being the one the user wrote.
 *
 * Keys use the file's snake_case in the parsed object too, so one name is grepped everywhere.
 */
import { z } from "zod";
import { usdToMicro } from "../../core/manifest/money.js";
import { ENV_NAME, INTERFACE_NAME, PACKAGE_NAME } from "../../core/manifest/schema.js";
import { SECURITY_MODES } from "../../core/security/modes/policy-table.js";

/** A capsule (package) name, as in Capsule.toml `[package] name`. */
const capsuleName = z
  .string()
  .regex(PACKAGE_NAME, "expected a capsule name (a-z first, then a-z, 0-9 or -, at most 63)");

const usd = z.string().superRefine((v, ctx) => {
  const r = usdToMicro(v);
  if (!r.ok) ctx.addIssue({ code: "custom", message: r.error });
});

const tokenCount = z.number().int().min(0);

/** `<namespace>.<interface>`, e.g. `astrid.llm`: the import a binding routes. */
export const INTERFACE_KEY = new RegExp(
  `^${INTERFACE_NAME.source.slice(1, -1)}\\.${INTERFACE_NAME.source.slice(1, -1)}$`,
);

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * The endpoint a provider capsule calls. Plain http is refused except on loopback (a local
 * Ollama): the request carries the API key and the prompt. User-info is refused so no
 * credential sits in the file. Messages never repeat the value: it might be a key pasted in
 * the wrong place.
 */
const baseUrl = z.string().superRefine((v, ctx) => {
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    ctx.addIssue({ code: "custom", message: 'expected a URL like "https://api.example.com"' });
    return;
  }
  if (url.username !== "" || url.password !== "") {
    ctx.addIssue({
      code: "custom",
      message:
        "expected a URL without user:password@: credentials are never written to the config file; name an environment variable with api_key_env",
    });
  } else if (url.protocol === "http:" && !LOOPBACK_HOSTS.has(url.hostname)) {
    ctx.addIssue({
      code: "custom",
      message:
        "expected an https:// URL (http:// only for localhost, 127.0.0.1 or [::1]): the request carries the API key and the prompt",
    });
  } else if (url.protocol !== "http:" && url.protocol !== "https:") {
    ctx.addIssue({ code: "custom", message: "expected an http(s):// URL" });
  }
});

const microPerMillion = z.number().int().min(0);

const modelPrice = z.strictObject({
  input: microPerMillion.describe("µUSD per million input tokens (3 USD → `3000000`)."),
  output: microPerMillion.describe("µUSD per million output tokens."),
});

const providerSchema = z.strictObject({
  base_url: baseUrl
    .optional()
    .describe("Endpoint of the provider's API (https, or http on loopback)."),
  model: z.string().min(1).optional().describe("Model used when `defaults.model` is unset."),
  api_key_env: z
    .string()
    .regex(
      ENV_NAME,
      "expected the NAME of an environment variable such as ANTHROPIC_API_KEY (A-Z, 0-9, _), not the key itself",
    )
    .optional()
    .describe(
      "NAME of the environment variable holding the API key (e.g. `ANTHROPIC_API_KEY`); unset: the provider needs no key. A literal key is refused.",
    ),
  price: z
    .record(z.string().min(1), modelPrice)
    .default({})
    .describe('Price per model, keyed by model name: `[providers.<name>.price."<model>"]`.'),
});

export const ConfigSchema = z.strictObject({
  defaults: z
    .strictObject({
      mode: z
        .enum(SECURITY_MODES)
        .default("guided")
        .describe("Security mode of new sessions (docs/security.md#security-modes)."),
      orchestrator: capsuleName
        .default("react")
        .describe("Capsule that serves prompts (`session.v1.prompt.*`): the agent loop."),
      provider: capsuleName
        .default("anthropic")
        .describe("Provider capsule of new sessions; a key of `[providers]`."),
      model: z
        .string()
        .min(1)
        .optional()
        .describe("Model of new sessions; unset: the provider's `model`."),
    })
    .prefault({}),
  budget: z
    .strictObject({
      session_usd: usd
        .default("5.00")
        .describe('Most one session may spend, USD as a quoted decimal ("5.00").'),
      call_usd: usd.default("0.50").describe("Most one LLM or tool call may reserve, USD."),
      session_tokens: tokenCount
        .default(2_000_000)
        .describe("Most LLM tokens one session may use."),
      call_tokens: tokenCount.default(200_000).describe("Most LLM tokens one call may use."),
      warn_at_percent: z
        .number()
        .int()
        .min(1)
        .max(100)
        .default(80)
        .describe("Percent of a session limit at which a warning is raised."),
    })
    .prefault({}),
  approvals: z
    .strictObject({
      timeout_seconds: z
        .number()
        .int()
        .min(1)
        .default(120)
        .describe("How long an approval request waits for a person before it is denied."),
    })
    .prefault({}),
  providers: z
    .record(capsuleName, providerSchema)
    .default({})
    .describe(
      "`[providers.<name>]`: one table per provider capsule. Built in: `anthropic`, `ollama`, `replay`; a table of the same name replaces the built-in one.",
    ),
  bindings: z
    .record(
      capsuleName,
      z.record(
        z.string().regex(INTERFACE_KEY, 'expected an interface like "astrid.llm" (quoted)'),
        capsuleName,
      ),
    )
    .default({})
    .describe(
      '`[bindings.<importer>]` `"<ns>.<interface>" = "<exporter>"`: which capsule serves an import (orchestrator → cache → provider is wiring, not code).',
    ),
  capsules: z
    .strictObject({
      enabled: z
        .array(capsuleName)
        .optional()
        .describe(
          "Capsules a session starts (and what their bindings reach), e.g. a router's providers; unset: every installed capsule may run, and the orchestrator, the tools and what their bindings reach start.",
        ),
    })
    .prefault({}),
  kv: z
    .strictObject({
      persist: z
        .boolean()
        .default(true)
        .describe(
          "Keep each capsule's kv entries across sessions in `state/kv/<capsule>/` (the cache's answers); false: a fresh in-memory store per session.",
        ),
    })
    .prefault({}),
  daemon: z
    .strictObject({
      idle_exit_minutes: z
        .number()
        .int()
        .min(0)
        .default(30)
        .describe("Minutes without a client after which astrid-daemon exits; 0: never."),
    })
    .prefault({}),
});

export type ProviderConfig = z.output<typeof providerSchema>;
/** A config as parsed, with the built-in providers added. */
export type AstridConfig = z.output<typeof ConfigSchema>;
export type AstridConfigInput = z.input<typeof ConfigSchema>;

/**
 * Providers every config knows without a table. The price is that of the default model so a
 * fresh install can count money; change it in your own `[providers.anthropic]` table.
 */
export const BUILTIN_PROVIDERS: Readonly<Record<string, ProviderConfig>> = Object.freeze({
  anthropic: {
    base_url: "https://api.anthropic.com",
    model: "claude-sonnet-4-5",
    api_key_env: "ANTHROPIC_API_KEY",
    price: { "claude-sonnet-4-5": { input: 3_000_000, output: 15_000_000 } },
  },
  ollama: {
    base_url: "http://127.0.0.1:11434",
    price: {},
  },
  // Offline demos and tests: plays back a recorded transcript, needs no key, costs nothing.
  replay: { price: {} },
});
