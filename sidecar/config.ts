/**
 * The sidecar's configuration. One zod schema is the single source of truth: the TypeScript
 * type, validation, the flag and environment-variable names, `--help` and the table in
 * docs/sidecar.md are all derived from it, so a field cannot exist in one and not the others.
 *
 * Sources, in increasing precedence: a TOML file (`--config` / ASTRID_SIDECAR_CONFIG), then
 * ASTRID_* environment variables, then command-line flags. Every error names where the bad
 * value came from (file:line, env var or flag), the field, and what was expected.
 */

import { readFile as fsReadFile } from "node:fs/promises";
import { parse as parseToml, TomlError } from "smol-toml";
import { z } from "zod";
import { AUDIT_SYNC_MODES } from "../core/audit/chain.js";
import { indexPositions, type KeyPath, locate } from "../core/manifest/locate.js";
import { usdToMicro } from "../core/manifest/money.js";
import { closestKey } from "../core/manifest/suggest.js";
import { SECURITY_MODES } from "../core/security/modes/policy-table.js";
import { type PairsResult, parseBindings, parseSettings, splitPairList } from "./pairs.js";

const path = z.string().min(1);

const usd = z.string().superRefine((v, ctx) => {
  const r = usdToMicro(v);
  if (!r.ok) ctx.addIssue({ code: "custom", message: r.error });
});

const count = z.number().int().min(0);

const natsBus = z.strictObject({
  kind: z.literal("nats"),
  url: z
    .string()
    .regex(
      /^(nats|tls|wss?):\/\//,
      'expected a URL starting with "nats://", "tls://" or "ws(s)://"',
    )
    .describe("NATS server URL, e.g. `nats://nats.astrid.svc:4222`."),
  user: z.string().min(1).optional().describe("NATS user name."),
  passwordFile: path
    .optional()
    .describe("File holding the NATS password (never passed inline: argv is visible in `ps`)."),
  credsFile: path.optional().describe("NATS `.creds` file (JWT + nkey seed)."),
});

const embeddedBus = z.strictObject({ kind: z.literal("embedded") });

/** A `name=value` list; each bad entry is one issue naming it. */
const pairList = (parse: (entries: readonly string[]) => PairsResult, item: string) =>
  z
    .array(z.string())
    .default([])
    .superRefine((entries, ctx) => {
      const r = parse(entries);
      if (!r.ok) for (const message of r.errors) ctx.addIssue({ code: "custom", message });
    })
    .meta({ listOf: item });

export const SidecarConfigSchema = z
  .strictObject({
    packageDir: path.describe("The capsule package: a folder with Capsule.toml and its artefacts."),
    identityKeyFile: path.describe(
      "Ed25519 private key (PKCS#8 PEM) that signs this sidecar's audit chain.",
    ),
    identityKeyId: z
      .string()
      .min(1)
      .describe("Name of the identity key, written into every audit entry."),
    bus: z
      .discriminatedUnion("kind", [natsBus, embeddedBus])
      .describe("The message bus: `nats` (a NATS server) or `embedded` (in-process)."),
    auditDir: path.describe("Directory of the audit chain segments (a PVC in the cluster)."),
    audit: z
      .strictObject({
        sync: z
          .enum(AUDIT_SYNC_MODES)
          .default("always")
          .describe(
            "`always`: a decision (audit entry, budget record) counts once fdatasync-ed; `interval`: once written, synced within `audit.syncIntervalMs` (see docs/security.md).",
          ),
        syncIntervalMs: z
          .number()
          .int()
          .min(1)
          .max(1000)
          .default(10)
          .describe(
            "With `audit.sync = interval`: longest time a written entry waits for its seal and fdatasync.",
          ),
      })
      .prefault({}),
    revocation: z
      .discriminatedUnion("kind", [
        z.strictObject({
          kind: z.literal("file"),
          path: path.describe("Revocation list file (`kind = file`), watched for changes."),
        }),
        z.strictObject({
          kind: z.literal("kv"),
          bucket: z
            .string()
            .min(1)
            .describe("JetStream KV bucket holding revoked token ids (`kind = kv`)."),
        }),
        z.strictObject({ kind: z.literal("none") }),
      ])
      .describe(
        "Where revoked capability tokens are listed: `file`, `kv`, or `none` (only with `tokens.required = false`).",
      ),
    trustedIssuerKeys: z
      .array(path)
      .default([])
      .describe(
        "PEM files of the Ed25519 public keys whose capability tokens are trusted. Flag: repeat it; env: comma-separated.",
      ),
    tokens: z
      .strictObject({
        required: z
          .boolean()
          .default(true)
          .describe(
            "Whether every call must carry a valid capability token (layer 4); `false` turns only that layer off.",
          ),
      })
      .prefault({}),
    session: z
      .string()
      .min(1)
      .optional()
      .describe("Session id for a session-bound sidecar; unset serves any session."),
    principal: z
      .string()
      .min(1)
      .optional()
      .describe("Principal (user or service) this sidecar acts for."),
    mode: z.enum(SECURITY_MODES).default("safe").describe("Security mode."),
    budget: z
      .strictObject({
        maxSessionUsd: usd.optional().describe('Most a session may spend, in USD ("5.00").'),
        maxCallUsd: usd.optional().describe('Most one call may spend, in USD ("0.50").'),
        maxSessionTokens: count.optional().describe("Most LLM tokens a session may use."),
        maxCallTokens: count.optional().describe("Most LLM tokens one call may use."),
        warnPercent: z
          .number()
          .int()
          .min(1)
          .max(100)
          .optional()
          .describe("Percent of a session limit at which a warning is raised."),
      })
      .optional()
      .describe("Budget overrides; each unset limit comes from the manifest's `[budget]`."),
    budgetDir: path
      .optional()
      .describe(
        "Directory of the budget journals and approval grants; default `state/` beside `auditDir` (same volume, so spending survives a restart).",
      ),
    approvalTimeoutMs: z
      .number()
      .int()
      .min(1)
      .default(120_000)
      .describe("How long a pending approval waits before it is denied."),
    workspace: path
      .optional()
      .describe("Root of `cwd://` capability paths; unset: `cwd://` rules match nothing."),
    home: path
      .optional()
      .describe("Root of `home://` capability paths; unset: `home://` rules match nothing."),
    http: z
      .strictObject({
        host: z
          .string()
          .min(1)
          .default("127.0.0.1")
          .describe("Address of the health/metrics server (loopback unless set)."),
        port: z
          .number()
          .int()
          .min(0)
          .max(65_535)
          .default(9464)
          .describe("Port of the health/metrics server (0: any free port)."),
      })
      .prefault({}),
    bindings: pairList(parseBindings, "IFACE=CAPSULE").describe(
      "Imports wired to exporters (`astrid.llm=cache`); the guest reads `bind.<iface>`. Flag: repeat it; env: comma-separated.",
    ),
    settings: pairList(parseSettings, "KEY=VALUE").describe(
      "Settings the guest reads with config(). Flag: repeat it; env: comma-separated (a part without `=` continues a value).",
    ),
    kv: z
      .discriminatedUnion("kind", [
        z.strictObject({ kind: z.literal("local") }),
        z.strictObject({
          kind: z.literal("jetstream"),
          bucket: z
            .string()
            .regex(
              /^[A-Za-z0-9_-]+$/,
              "expected a JetStream bucket name (letters, digits, _ and -)",
            )
            .optional()
            .describe("JetStream KV bucket; default `astrid-kv-<capsule>`."),
        }),
      ])
      .default({ kind: "local" })
      .describe(
        "Store of the guest's kv calls: `local` (memory) or `jetstream` (a KV bucket the replicas share; needs NATS).",
      ),
    task: z
      .strictObject({
        text: z
          .string()
          .min(1)
          .optional()
          .describe(
            "Task mode: once ready, send this prompt to the capsule, write the result, exit. Needs `session`, `principal`.",
          ),
        tokenFile: path
          .optional()
          .describe("File holding the capability token the task's prompt carries."),
        resultFile: path
          .optional()
          .describe(
            "Where the task's result goes: one JSON line, at most 4096 bytes (`/dev/termination-log`).",
          ),
        timeoutMs: z
          .number()
          .int()
          .min(1)
          .default(600_000)
          .describe("How long the task's prompt may run before it fails."),
      })
      .prefault({}),
    logLevel: z
      .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
      .default("info")
      .describe("Lowest log level written."),
    drainTimeoutMs: z
      .number()
      .int()
      .min(0)
      .default(30_000)
      .describe("On SIGTERM, how long in-flight calls may run before the sidecar closes anyway."),
  })
  .superRefine((c, ctx) => {
    // Without a revocation list a revoked token would still be honoured: only allowed where
    // tokens are not checked at all.
    if (c.revocation.kind === "none" && c.tokens.required) {
      ctx.addIssue({
        code: "custom",
        path: ["revocation", "kind"],
        message:
          'expected "file" or "kv" while tokens.required is true: without a revocation list a revoked token would still be accepted',
      });
    }
    // A task needs all of these to be sent and answered; report every missing one at once.
    if (c.task.text !== undefined) {
      const needs: [string[], unknown][] = [
        [["session"], c.session],
        [["principal"], c.principal],
        [["task", "tokenFile"], c.task.tokenFile],
        [["task", "resultFile"], c.task.resultFile],
      ];
      for (const [p, v] of needs) {
        if (v === undefined) {
          ctx.addIssue({
            code: "custom",
            path: p,
            message: `required with task.text${howToSet(p.join("."))}`,
          });
        }
      }
    }
    // Replicas share the JetStream bucket through the bus connection; there is none embedded.
    if (c.kv.kind === "jetstream" && c.bus.kind !== "nats") {
      ctx.addIssue({
        code: "custom",
        path: ["kv", "kind"],
        message: 'expected "local" while bus.kind is not "nats": a JetStream bucket needs NATS',
      });
    }
    // Required tokens with no issuer to trust would deny every call; say so at start instead.
    if (c.tokens.required && c.trustedIssuerKeys.length === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["trustedIssuerKeys"],
        message:
          "expected at least one issuer key file while tokens.required is true: no token could be verified",
      });
    }
  });

export type SidecarConfig = z.output<typeof SidecarConfigSchema>;
export type SidecarConfigInput = z.input<typeof SidecarConfigSchema>;

// ---------------------------------------------------------------------------------------------
// The catalogue of leaf fields, read from the schema's JSON Schema (zod's public reflection).

type LeafType = "string" | "integer" | "boolean" | "string[]";

export interface ConfigField {
  /** Dotted field path, e.g. `bus.url`; also the key path in the TOML file. */
  readonly key: string;
  readonly path: readonly string[];
  readonly flag: string;
  readonly env: string;
  readonly type: LeafType;
  readonly values?: readonly string[];
  readonly default?: unknown;
  readonly required: boolean;
  readonly description: string;
  /** For fields of one variant of a union: e.g. `bus.kind = nats`. */
  readonly onlyWhen?: string;
  /** For a list of `name=value` entries: its placeholder, e.g. `IFACE=CAPSULE`. */
  readonly listOf?: string;
}

interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  oneOf?: JsonSchema[];
  anyOf?: JsonSchema[];
  items?: JsonSchema;
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  description?: string;
  listOf?: string;
}

const kebab = (s: string): string => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

function buildCatalogue(): { fields: ConfigField[]; unions: Set<string> } {
  const json = z.toJSONSchema(SidecarConfigSchema, { io: "input" }) as JsonSchema;
  const fields: ConfigField[] = [];
  const unions = new Set<string>();
  const leaf = (
    p: string[],
    s: JsonSchema,
    required: boolean,
    extra: { values?: string[]; onlyWhen?: string; description?: string; default?: unknown } = {},
  ): void => {
    const key = p.join(".");
    const type: LeafType =
      s.type === "integer" || s.type === "number"
        ? "integer"
        : s.type === "boolean"
          ? "boolean"
          : s.type === "array"
            ? "string[]"
            : "string";
    const values = extra.values ?? (s.enum as string[] | undefined);
    const default_ = extra.default ?? s.default;
    fields.push({
      key,
      path: p,
      flag: `--${p.map(kebab).join("-")}`,
      env: `ASTRID_${p.map((x) => kebab(x).replace(/-/g, "_")).join("_")}`.toUpperCase(),
      type,
      ...(values ? { values } : {}),
      ...(default_ !== undefined ? { default: default_ } : {}),
      required: required && default_ === undefined,
      description: extra.description ?? s.description ?? "",
      ...(extra.onlyWhen ? { onlyWhen: extra.onlyWhen } : {}),
      ...(s.listOf ? { listOf: s.listOf } : {}),
    });
  };
  const walk = (p: string[], s: JsonSchema, required: boolean): void => {
    const variants = s.oneOf ?? s.anyOf;
    if (variants) {
      const key = p.join(".");
      unions.add(key);
      const kinds = variants.map((v) => String(v.properties?.kind?.const));
      const defaultKind =
        typeof s.default === "object" && s.default !== null
          ? (s.default as { kind?: unknown }).kind
          : undefined;
      leaf([...p, "kind"], { type: "string" }, required, {
        values: kinds,
        description: s.description ?? "",
        ...(defaultKind !== undefined ? { default: defaultKind } : {}),
      });
      for (const v of variants) {
        const kind = String(v.properties?.kind?.const);
        for (const [name, sub] of Object.entries(v.properties ?? {})) {
          if (name === "kind") continue;
          leaf([...p, name], sub, required && (v.required ?? []).includes(name), {
            onlyWhen: `${key}.kind = ${kind}`,
          });
        }
      }
      return;
    }
    if (s.type === "object" && s.properties) {
      for (const [name, sub] of Object.entries(s.properties)) {
        walk([...p, name], sub, required && (s.required ?? []).includes(name));
      }
      return;
    }
    leaf(p, s, required);
  };
  walk([], json, true);
  return { fields, unions };
}

const CATALOGUE = buildCatalogue();
/** Every settable field, in schema order. */
export const SIDECAR_CONFIG_FIELDS: readonly ConfigField[] = CATALOGUE.fields;
const BY_KEY = new Map(SIDECAR_CONFIG_FIELDS.map((f) => [f.key, f]));
const BY_FLAG = new Map(SIDECAR_CONFIG_FIELDS.map((f) => [f.flag, f]));
const BY_ENV = new Map(SIDECAR_CONFIG_FIELDS.map((f) => [f.env, f]));

export const CONFIG_FLAG = "--config";
export const CONFIG_ENV = "ASTRID_SIDECAR_CONFIG";

// ---------------------------------------------------------------------------------------------
// Errors

export interface SidecarConfigIssue {
  /** `flag --http-port`, `env ASTRID_HTTP_PORT`, `/etc/astrid/sidecar.toml:7`, or undefined. */
  readonly source?: string;
  /** Dotted field path, or "" when the problem is not about one field. */
  readonly field: string;
  readonly message: string;
}

export function formatConfigIssue(i: SidecarConfigIssue): string {
  const at = [i.source, i.field].filter((x) => x !== undefined && x !== "");
  return `${[...at, i.message].join(": ")}`;
}

export class SidecarConfigError extends Error {
  override readonly name = "SidecarConfigError";
  constructor(readonly issues: readonly SidecarConfigIssue[]) {
    super(issues.map(formatConfigIssue).join("\n"));
  }
}

// ---------------------------------------------------------------------------------------------
// Layers

type Tree = Record<string, unknown>;

const isTable = (v: unknown): v is Tree =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);

interface Layer {
  readonly values: Tree;
  readonly sourceOf: (path: KeyPath) => string;
}

function setPath(tree: Tree, p: readonly string[], value: unknown): void {
  let t = tree;
  for (const seg of p.slice(0, -1)) {
    if (!isTable(t[seg])) t[seg] = {};
    t = t[seg] as Tree;
  }
  t[p[p.length - 1]!] = value;
}

function getPath(tree: unknown, p: KeyPath): unknown {
  let t = tree;
  for (const seg of p) {
    if (Array.isArray(t) && typeof seg === "number") t = t[seg];
    else if (isTable(t)) t = t[String(seg)];
    else return undefined;
  }
  return t;
}

const SECRET_WORD = /pass(word|wd)?|secret/i;

/** A secret typed inline (argv, env, file) is refused: the value would leak through `ps`. */
function inlineSecret(name: string, source: string): SidecarConfigIssue | undefined {
  if (!SECRET_WORD.test(name) || /file$/i.test(name)) return undefined;
  const fileField = BY_KEY.get("bus.passwordFile")!;
  const how =
    source === "flag"
      ? `pass ${fileField.flag}`
      : source === "env"
        ? `set ${fileField.env}`
        : `set ${fileField.key}`;
  const why =
    source === "flag"
      ? "secrets are never taken on the command line (any local user can read it with ps)"
      : "secrets are never taken inline, only from files";
  return {
    source: source === "flag" ? `flag --${name.replace(/^-+/, "")}` : source,
    field: "",
    message: `${why}; write it to a file and ${how}`,
  };
}

function parseScalar(
  field: ConfigField,
  text: string,
): { ok: true; value: unknown } | { ok: false; message: string } {
  switch (field.type) {
    case "integer":
      if (/^-?[0-9]+$/.test(text)) return { ok: true, value: Number(text) };
      return { ok: false, message: `expected an integer, got ${JSON.stringify(text)}` };
    case "boolean":
      if (text === "true" || text === "false") return { ok: true, value: text === "true" };
      return { ok: false, message: `expected true or false, got ${JSON.stringify(text)}` };
    case "string[]":
      // `tool_capsules=fs,shell` is one setting: in a name=value list a part without `=`
      // continues the previous value.
      if (field.listOf === "KEY=VALUE") return { ok: true, value: splitPairList(text) };
      return {
        ok: true,
        value: text
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s !== ""),
      };
    default:
      return { ok: true, value: text };
  }
}

interface FlagParse {
  readonly help: boolean;
  readonly configFile?: string;
  readonly layer: Layer;
}

function parseFlags(argv: readonly string[], issues: SidecarConfigIssue[]): FlagParse {
  const values: Tree = {};
  const sources = new Map<string, string>();
  let help = false;
  let configFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (!arg.startsWith("--")) {
      issues.push({
        source: `argument ${JSON.stringify(arg)}`,
        field: "",
        message: "unexpected argument; every setting is a --flag (see --help)",
      });
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    const secret = inlineSecret(name.slice(2), "flag");
    if (secret) {
      issues.push(secret);
      if (eq < 0) i++;
      continue;
    }
    const field = BY_FLAG.get(name);
    if (!field && name !== CONFIG_FLAG) {
      const near = closestKey(name, [...BY_FLAG.keys(), CONFIG_FLAG, "--help"]);
      issues.push({
        source: `flag ${name}`,
        field: "",
        message: `unknown flag${near ? ` (did you mean ${near}?)` : ""}; see --help`,
      });
      if (eq < 0 && argv[i + 1] !== undefined && !argv[i + 1]!.startsWith("--")) i++;
      continue;
    }
    let text: string;
    if (eq >= 0) text = arg.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith("--")) {
        issues.push({
          source: `flag ${name}`,
          field: field?.key ?? "",
          message: `expected a value after ${name}`,
        });
        continue;
      }
      text = next;
      i++;
    }
    if (!field) {
      configFile = text;
      continue;
    }
    const parsed = parseScalar(field, text);
    if (!parsed.ok) {
      issues.push({ source: `flag ${name}`, field: field.key, message: parsed.message });
      continue;
    }
    // A repeated list flag adds to the list; a repeated scalar flag keeps the last value.
    const prior = getPath(values, field.path);
    const value =
      field.type === "string[]" && Array.isArray(prior)
        ? [...prior, ...(parsed.value as string[])]
        : parsed.value;
    setPath(values, field.path, value);
    sources.set(field.key, `flag ${name}`);
  }
  return {
    help,
    ...(configFile !== undefined ? { configFile } : {}),
    layer: { values, sourceOf: (p) => sources.get(p.join(".")) ?? "flags" },
  };
}

function parseEnv(
  env: Readonly<Record<string, string | undefined>>,
  issues: SidecarConfigIssue[],
): Layer {
  const values: Tree = {};
  const sources = new Map<string, string>();
  const known = [...BY_ENV.keys(), CONFIG_ENV];
  // Sorted so the error list does not depend on the order the environment happens to have.
  for (const [name, text] of Object.entries(env).sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (!name.startsWith("ASTRID_") || name === CONFIG_ENV) continue;
    // An empty variable is unset: manifests and charts render absent values as "".
    if (text === undefined || text === "") continue;
    const field = BY_ENV.get(name);
    if (!field) {
      // Only a variable that stands for a sidecar secret is refused, not every *_SECRET of
      // other programs that share the environment.
      const standsForSecret =
        BY_ENV.has(`${name}_FILE`) || /^ASTRID_(NATS_)?PASS(WORD|WD)?$/.test(name);
      const secret = standsForSecret ? inlineSecret(name, "env") : undefined;
      if (secret) {
        issues.push({ ...secret, source: `env ${name}` });
        continue;
      }
      // Other Astrid programs have ASTRID_* variables of their own, so only a near miss of a
      // sidecar variable is an error (a typo must not silently drop a setting).
      const near = known.filter((k) => closestKey(name, [k]) !== undefined);
      if (near.length > 0) {
        issues.push({
          source: `env ${name}`,
          field: "",
          message: `unknown variable (did you mean ${near.join(" or ")}?)`,
        });
      }
      continue;
    }
    const parsed = parseScalar(field, text);
    if (!parsed.ok) {
      issues.push({ source: `env ${name}`, field: field.key, message: parsed.message });
      continue;
    }
    setPath(values, field.path, parsed.value);
    sources.set(field.key, `env ${name}`);
  }
  return { values, sourceOf: (p) => sources.get(p.join(".")) ?? "environment" };
}

function parseFile(file: string, text: string, issues: SidecarConfigIssue[]): Layer | undefined {
  let values: Tree;
  try {
    values = parseToml(text) as Tree;
  } catch (e) {
    if (e instanceof TomlError) {
      const first = (e.message.split("\n")[0] ?? e.message).replace(/^Invalid TOML document: /, "");
      issues.push({
        source: `${file}:${e.line}`,
        field: "",
        message: `invalid TOML: ${first} (column ${e.column})`,
      });
      return undefined;
    }
    throw e;
  }
  const positions = indexPositions(text);
  return { values, sourceOf: (p) => `${file}:${locate(positions, p).line}` };
}

/**
 * Merges `layer` over `target`, recording where each leaf came from. When a higher layer
 * switches a union's kind (bus `nats` → `embedded`), the lower layer's fields of the old kind
 * are dropped rather than left behind as unknown keys.
 */
function mergeLayer(
  target: Tree,
  layer: Layer,
  provenance: Map<string, string>,
  src: Tree = layer.values,
  prefix: string[] = [],
): void {
  for (const [key, value] of Object.entries(src)) {
    const p = [...prefix, key];
    const dotted = p.join(".");
    if (isTable(value)) {
      const existing = target[key];
      if (
        CATALOGUE.unions.has(dotted) &&
        isTable(existing) &&
        value.kind !== undefined &&
        existing.kind !== undefined &&
        value.kind !== existing.kind
      ) {
        target[key] = {};
        for (const k of [...provenance.keys()]) {
          if (k.startsWith(`${dotted}.`)) provenance.delete(k);
        }
      } else if (!isTable(existing)) target[key] = {};
      mergeLayer(target[key] as Tree, layer, provenance, value, p);
      continue;
    }
    target[key] = value;
    provenance.set(dotted, layer.sourceOf(p));
  }
}

// ---------------------------------------------------------------------------------------------
// Turning zod issues into sentences

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return "a list";
  if (isTable(v)) return "a table";
  return String(v);
}

const EXPECTED: Record<LeafType, string> = {
  string: "a string",
  integer: "an integer",
  boolean: "true or false",
  "string[]": "a list of file paths",
};

function howToSet(key: string): string {
  const f = BY_KEY.get(key) ?? BY_KEY.get(`${key}.kind`);
  if (!f) return "";
  return ` (set ${f.flag}, ${f.env} or ${f.key} in the config file)`;
}

function sourceFor(provenance: Map<string, string>, p: KeyPath): string | undefined {
  for (let n = p.length; n > 0; n--) {
    const s = provenance.get(p.slice(0, n).join("."));
    if (s) return s;
  }
  const dotted = p.join(".");
  for (const [k, s] of provenance) if (dotted === "" || k.startsWith(`${dotted}.`)) return s;
  // A missing field of a table: point at where the table itself was written.
  if (p.length > 1) {
    const parent = `${p.slice(0, -1).join(".")}.`;
    for (const [k, s] of provenance) if (k.startsWith(parent)) return s;
  }
  return undefined;
}

function knownKeysAt(p: readonly string[]): string[] {
  const depth = p.length;
  const keys = new Set<string>();
  for (const f of SIDECAR_CONFIG_FIELDS) {
    if (f.path.length > depth && p.every((seg, i) => f.path[i] === seg)) keys.add(f.path[depth]!);
  }
  return [...keys];
}

function issuesFromZod(
  error: z.ZodError,
  merged: Tree,
  provenance: Map<string, string>,
): SidecarConfigIssue[] {
  const out: SidecarConfigIssue[] = [];
  for (const iss of error.issues) {
    const p = iss.path.map(String);
    const key = p.join(".");
    const field = BY_KEY.get(key);
    const value = getPath(merged, p);
    const source = sourceFor(provenance, p);
    const at = (message: string, fieldName = key, src = source): void => {
      out.push({ ...(src !== undefined ? { source: src } : {}), field: fieldName, message });
    };
    switch (iss.code) {
      case "unrecognized_keys":
        for (const k of iss.keys) {
          const kp = [...p, k];
          const src = sourceFor(provenance, kp);
          const secret = inlineSecret(k, "file");
          if (secret) {
            at(secret.message, kp.join("."), src);
            continue;
          }
          const kind = isTable(value) ? value.kind : undefined;
          const known = knownKeysAt(p);
          const near = closestKey(k, known);
          const variant =
            kind !== undefined && known.includes(k) ? ` for ${key}.kind = ${describe(kind)}` : "";
          at(
            `unknown key${variant}${near && variant === "" ? ` (did you mean ${near}?)` : ""}`,
            kp.join("."),
            src,
          );
        }
        break;
      case "invalid_union": {
        const options = CATALOGUE.fields.find((f) => f.key === key)?.values;
        if (value === undefined) at(`required${howToSet(key)}`);
        else
          at(
            `expected one of ${(options ?? []).map((o) => JSON.stringify(o)).join(", ")}, got ${describe(value)}`,
          );
        break;
      }
      case "invalid_type":
        if (value === undefined) at(`required${howToSet(key)}`);
        else if (key.endsWith("Usd")) {
          // A TOML float would round: amounts are quoted decimals.
          at(`expected a quoted decimal USD amount like "0.50", got ${describe(value)}`);
        } else {
          const expected = field
            ? field.listOf
              ? `a list of ${field.listOf} entries`
              : EXPECTED[field.type]
            : iss.expected === "object"
              ? "a table"
              : iss.expected;
          at(`expected ${expected}, got ${describe(value)}`);
        }
        break;
      case "invalid_value":
        at(
          `expected one of ${iss.values.map((v) => JSON.stringify(v)).join(", ")}, got ${describe(value)}`,
        );
        break;
      case "too_small":
        if (iss.origin === "string") at(`expected a non-empty string, got ""`);
        else at(`expected at least ${String(iss.minimum)}, got ${describe(value)}`);
        break;
      case "too_big":
        at(`expected at most ${String(iss.maximum)}, got ${describe(value)}`);
        break;
      default:
        at(iss.message);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Loading

export interface LoadSidecarConfigOptions {
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readFile?: (path: string) => Promise<string>;
}

export type SidecarConfigLoad =
  | { readonly kind: "help"; readonly text: string }
  | { readonly kind: "config"; readonly config: SidecarConfig; readonly configFile?: string };

/**
 * Reads flags, environment and the optional TOML file into a validated SidecarConfig.
 * Throws SidecarConfigError listing every problem found. `--help` wins over any problem.
 */
export async function loadSidecarConfig(
  opts: LoadSidecarConfigOptions,
): Promise<SidecarConfigLoad> {
  const issues: SidecarConfigIssue[] = [];
  const flags = parseFlags(opts.argv, issues);
  if (flags.help) return { kind: "help", text: sidecarHelp() };
  const envLayer = parseEnv(opts.env, issues);

  const fromEnv = opts.env[CONFIG_ENV];
  const configFile =
    flags.configFile ?? (fromEnv !== undefined && fromEnv !== "" ? fromEnv : undefined);
  let fileLayer: Layer | undefined;
  if (configFile !== undefined) {
    const readFile = opts.readFile ?? ((p: string) => fsReadFile(p, "utf8"));
    try {
      fileLayer = parseFile(configFile, await readFile(configFile), issues);
    } catch (e) {
      issues.push({
        source: flags.configFile !== undefined ? `flag ${CONFIG_FLAG}` : `env ${CONFIG_ENV}`,
        field: "",
        message: `cannot read config file ${configFile}: ${(e as Error).message}`,
      });
    }
  }
  // A TOML syntax error leaves nothing to validate; otherwise validate what was read so one run
  // shows every mistake, skipping fields whose raw value was already reported.
  if (configFile !== undefined && !fileLayer) throw new SidecarConfigError(issues);
  const merged: Tree = {};
  const provenance = new Map<string, string>();
  for (const layer of [fileLayer, envLayer, flags.layer]) {
    if (layer) mergeLayer(merged, layer, provenance);
  }
  const r = SidecarConfigSchema.safeParse(merged, { reportInput: true });
  if (!r.success) {
    const reported = new Set(issues.map((i) => i.field).filter((f) => f !== ""));
    for (const i of issuesFromZod(r.error, merged, provenance)) {
      if (!reported.has(i.field)) issues.push(i);
    }
  }
  if (issues.length > 0 || !r.success) throw new SidecarConfigError(issues);
  return { kind: "config", config: r.data, ...(configFile !== undefined ? { configFile } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Generated text: --help and the docs table

function typeText(f: ConfigField, code: (s: string) => string): string {
  if (f.values) return f.values.map(code).join(", ");
  if (f.listOf) return `list of ${code(f.listOf)}`;
  return f.type === "string[]" ? "list of files" : f.type;
}

const shown = (v: unknown): string => (Array.isArray(v) ? "none" : String(v));

/** `--help`: every flag with its variable and default, from the schema. */
export function sidecarHelp(): string {
  const lines = [
    "Usage: astrid-sidecar [--config FILE] [--FLAG VALUE ...]",
    "       astrid-sidecar fetch-package [--FLAG VALUE ...]   (see fetch-package --help)",
    "",
    "Hosts one capsule: loads its package, joins the bus and puts every call through",
    "Astrid's security layers, writing each decision to a signed audit chain.",
    "With --task-text (a session pod) it sends that prompt to the capsule once ready,",
    "writes the result to --task-result-file and exits: 0 answered, 1 failed.",
    "",
    "Each setting comes from, in increasing precedence: the TOML config file",
    `(${CONFIG_FLAG} FILE or ${CONFIG_ENV}; keys are the field names, e.g. bus.url),`,
    "ASTRID_* environment variables, then flags. Secrets are only read from files.",
    "",
    "Flags:",
  ];
  const rows: [string, string][] = [
    [`${CONFIG_FLAG} FILE`, `TOML config file. Env ${CONFIG_ENV}.`],
  ];
  for (const f of SIDECAR_CONFIG_FIELDS) {
    const value = f.values
      ? f.values.join("|")
      : f.type === "string[]"
        ? (f.listOf ?? "FILE")
        : f.type.toUpperCase();
    const notes = [
      `Env ${f.env}.`,
      f.required ? "Required." : "",
      f.default !== undefined ? `Default ${shown(f.default)}.` : "",
      f.onlyWhen ? `Only with ${f.onlyWhen}.` : "",
    ].filter((s) => s !== "");
    rows.push([`${f.flag} ${value}`, `${f.description} ${notes.join(" ")}`]);
  }
  rows.push(["--help", "Print this text."]);
  // Flag on one line, its description indented under it: fits 100 columns without wrapping.
  for (const [a, b] of rows) lines.push(`  ${a}`, `      ${b}`);
  return `${lines.join("\n")}\n`;
}

export const CONFIG_TABLE_START = "<!-- config-table:start (generated by sidecarConfigTable) -->";
export const CONFIG_TABLE_END = "<!-- config-table:end -->";

/** The markdown table of docs/sidecar.md, padded the way biome formats markdown tables. */
export function sidecarConfigTable(): string {
  const code = (s: string): string => `\`${s}\``;
  const rows: string[][] = [["field", "flag", "environment", "type", "default", "description"]];
  for (const f of SIDECAR_CONFIG_FIELDS) {
    const default_ =
      f.default !== undefined && !Array.isArray(f.default)
        ? code(shown(f.default))
        : f.required
          ? "required"
          : "unset";
    const note = f.onlyWhen ? ` Only with \`${f.onlyWhen}\`.` : "";
    rows.push([
      code(f.key),
      code(f.flag),
      code(f.env),
      typeText(f, code),
      default_,
      `${f.description}${note}`.replace(/\|/g, "\\|"),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]): string =>
    `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  const [header, ...body] = rows;
  return `${[line(header!), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n")}\n`;
}
