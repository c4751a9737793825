/**
 * Reads one config.toml (the user's or a workspace's) into a validated AstridConfig. Every
 * problem is reported at once with `file:line`, the field and what was expected.
 *
 * API keys never come from this file. A key-like setting (`api_key = …`) or a value that looks
 * like a key is refused, and errors repeat neither such a value nor any string under
 * `[providers]` (where a key pasted in the wrong place would be): the message of a config
 * error ends up in terminals, logs and bug reports.
 */
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { parse as parseToml, TomlError } from "smol-toml";
import type { z } from "zod";
import { indexPositions, type KeyPath, locate } from "../../core/manifest/locate.js";
import { closestKey } from "../../core/manifest/suggest.js";
import { ConfigError, type ConfigIssue } from "./errors.js";
import { type AstridConfig, BUILTIN_PROVIDERS, ConfigSchema } from "./schema.js";
import { knownKeysAt } from "./table.js";

type Tree = Record<string, unknown>;

export interface ConfigFile {
  /** Path of the file, or `(defaults)` when none was read. */
  readonly file: string;
  readonly exists: boolean;
  /** Validated, with defaults and the built-in providers filled in. */
  readonly config: AstridConfig;
  /** The values as written, before defaults: what a workspace file really sets. */
  readonly written: Readonly<Tree>;
  /** `file:line` where `path` (or its nearest written ancestor) is written. */
  sourceOf(path: KeyPath): string;
}

const isTable = (v: unknown): v is Tree =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);

/**
 * Key names that would hold a credential. `api_key_env` (a variable's name) is the one allowed
 * way to say where a key is.
 */
const SECRET_KEY_NAME =
  /(^|[_-])(api[_-]?key|apikey|key|token|secret|password|passwd|credentials?|auth|authorization|bearer)$/i;

/**
 * Best effort: well-known key prefixes (Anthropic/OpenAI `sk-`, Groq `gsk_`, xAI `xai-`, Google
 * `AIza`, GitHub `ghp_`/`github_pat_`, Hugging Face `hf_`, GitLab `glpat-`).
 */
const SECRET_VALUE = /^(sk-|sk_|gsk_|xai-|AIza|ghp_|github_pat_|hf_|glpat-)[A-Za-z0-9_-]{16,}$/;

export function looksLikeSecret(value: string): boolean {
  return SECRET_VALUE.test(value.trim());
}

const KEYS_FROM_ENV =
  "keys come from the environment and are never written to disk, logs or audit; export it (e.g. ANTHROPIC_API_KEY=...) and name the variable with api_key_env in [providers.<name>]";

/** Reports literal credentials anywhere in the written tree. */
function refuseLiteralSecrets(tree: unknown, path: string[], at: Issues): void {
  if (Array.isArray(tree)) {
    for (const [i, v] of tree.entries()) refuseLiteralSecrets(v, [...path, String(i)], at);
    return;
  }
  if (!isTable(tree)) {
    if (typeof tree === "string" && looksLikeSecret(tree)) {
      at.add(path, `this value looks like an API key and is refused: ${KEYS_FROM_ENV}`);
    }
    return;
  }
  for (const [k, v] of Object.entries(tree)) {
    if (k !== "api_key_env" && SECRET_KEY_NAME.test(k) && !isTable(v)) {
      at.add([...path, k], `a literal API key is refused: ${KEYS_FROM_ENV}`);
      continue;
    }
    refuseLiteralSecrets(v, [...path, k], at);
  }
}

class Issues {
  private readonly items: ConfigIssue[] = [];
  private readonly fields = new Set<string>();
  constructor(private readonly sourceOf: (p: KeyPath) => string) {}

  add(path: readonly string[], message: string): void {
    const field = path.join(".");
    // One message per field: a refused secret is not also an "unknown key".
    if (this.fields.has(field)) return;
    this.fields.add(field);
    this.items.push({ source: this.sourceOf(path), field, message });
  }

  /** In file order, so the messages read top to bottom like the file. */
  get list(): ConfigIssue[] {
    const line = (i: ConfigIssue): number => Number(/:(\d+)$/.exec(i.source ?? "")?.[1] ?? 0);
    return [...this.items].sort((a, b) => line(a) - line(b));
  }
}

/** A value shown in an error; strings only when short and not key-like. */
function shown(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "string") {
    return v.length <= 64 && !looksLikeSecret(v) ? JSON.stringify(v) : "a string";
  }
  if (Array.isArray(v)) return "a list";
  if (v instanceof Date) return "a date";
  if (isTable(v)) return "a table";
  return String(v);
}

function valueAt(tree: unknown, path: readonly PropertyKey[]): unknown {
  let t = tree;
  for (const seg of path) {
    if (Array.isArray(t)) t = t[Number(seg)];
    else if (isTable(t)) t = t[String(seg)];
    else return undefined;
  }
  return t;
}

const EXPECTED_TYPE: Readonly<Record<string, string>> = {
  string: "a string",
  number: "an integer",
  object: "a table",
  array: "a list",
  boolean: "true or false",
};

function reportZodIssues(error: z.ZodError, written: Tree, at: Issues): void {
  for (const iss of error.issues) {
    const path = iss.path.map(String);
    const value = valueAt(written, iss.path);
    // Provider settings are where a key pasted in the wrong place would be: never echo them.
    const show = (v: unknown): string =>
      path[0] === "providers" && typeof v === "string" ? "a string" : shown(v);
    switch (iss.code) {
      case "unrecognized_keys":
        for (const k of iss.keys) {
          const near = closestKey(k, knownKeysAt(path));
          at.add([...path, k], `unknown key${near ? ` (did you mean ${near}?)` : ""}`);
        }
        break;
      case "invalid_key": {
        if (path[0] === "bindings" && path.length === 3 && isTable(value)) {
          // `astrid.llm = "cache"` unquoted is a dotted key: TOML made it nested tables.
          at.add(
            path,
            `expected an interface like "astrid.llm"; quote it, or TOML reads the dot as a nested table: "${path[2]}.<interface>" = "<capsule>"`,
          );
          break;
        }
        const inner = iss.issues[0]?.message ?? "invalid name";
        at.add(path, `${inner}, got ${shown(path[path.length - 1])}`);
        break;
      }
      case "invalid_type":
        if (/_usd$/.test(path[path.length - 1] ?? "") && typeof value === "number") {
          // A TOML float would round: amounts are quoted decimals.
          at.add(path, `expected a quoted decimal USD amount like "0.50", got ${show(value)}`);
        } else if (
          iss.expected === "int" ||
          (iss.expected === "number" && typeof value === "number")
        ) {
          at.add(path, `expected an integer, got ${show(value)}`);
        } else {
          at.add(
            path,
            `expected ${EXPECTED_TYPE[iss.expected] ?? iss.expected}, got ${show(value)}`,
          );
        }
        break;
      case "invalid_value":
        at.add(
          path,
          `expected one of ${iss.values.map((v) => JSON.stringify(v)).join(", ")}, got ${show(value)}`,
        );
        break;
      case "too_small":
        if (iss.origin === "string") at.add(path, 'expected a non-empty string, got ""');
        else at.add(path, `expected at least ${String(iss.minimum)}, got ${show(value)}`);
        break;
      case "too_big":
        at.add(path, `expected at most ${String(iss.maximum)}, got ${show(value)}`);
        break;
      case "invalid_format": {
        const got = show(value);
        at.add(path, got === "a string" ? iss.message : `${iss.message}, got ${got}`);
        break;
      }
      default:
        at.add(path, iss.message);
    }
  }
}

/** Checks across tables, after the built-in providers are added. */
function crossCheck(config: AstridConfig, at: Issues): void {
  const provider = config.defaults.provider;
  if (!(provider in config.providers)) {
    const known = Object.keys(config.providers).sort();
    const near = closestKey(provider, known);
    at.add(
      ["defaults", "provider"],
      `no provider named ${JSON.stringify(provider)}${near ? ` (did you mean ${near}?)` : ""}; add a [providers.${provider}] table or choose one of ${known.join(", ")}`,
    );
  }
}

function withBuiltins(config: AstridConfig): AstridConfig {
  return { ...config, providers: { ...BUILTIN_PROVIDERS, ...config.providers } };
}

/** Validates a parsed TOML tree. `sourceOf` maps a key path to `file:line`. */
export function configFromValues(
  written: Tree,
  file: string,
  sourceOf: (p: KeyPath) => string,
  exists = true,
): ConfigFile {
  const at = new Issues(sourceOf);
  refuseLiteralSecrets(written, [], at);
  const r = ConfigSchema.safeParse(written);
  if (!r.success) reportZodIssues(r.error, written, at);
  if (at.list.length > 0 || !r.success) throw new ConfigError(at.list);
  const config = withBuiltins(r.data);
  crossCheck(config, at);
  if (at.list.length > 0) throw new ConfigError(at.list);
  return { file, exists, config, written, sourceOf };
}

/** Parses and validates the text of a config file; `file` names it in errors. */
export function parseConfigText(text: string, file: string): ConfigFile {
  let written: Tree;
  try {
    written = parseToml(text) as Tree;
  } catch (e) {
    if (e instanceof TomlError) {
      // Only the first line: smol-toml appends the offending source line, which could hold a key.
      const first = (e.message.split("\n")[0] ?? "").replace(/^Invalid TOML document: /, "");
      throw new ConfigError([
        {
          source: `${file}:${e.line}`,
          field: "",
          message: `invalid TOML: ${first} (column ${e.column})`,
        },
      ]);
    }
    throw e;
  }
  const positions = indexPositions(text);
  return configFromValues(written, file, (p) => `${file}:${locate(positions, p).line}`);
}

/** The config of a missing file: every default, the built-in providers. */
export function defaultConfigFile(file = "(defaults)"): ConfigFile {
  return configFromValues({}, file, () => file, false);
}

/** Far above any real config; a workspace file is the repository author's to make huge. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Reads `path`; a file that does not exist yields the defaults (`exists: false`). Only a regular
 * file is read (checked on the open descriptor): a workspace's `.astrid/config.toml` that is a
 * FIFO or a link to `/dev/zero` would otherwise hang or exhaust the CLI.
 */
export async function loadConfigFile(path: string): Promise<ConfigFile> {
  const fail = (message: string): ConfigError =>
    new ConfigError([{ source: path, field: "", message }]);
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return defaultConfigFile(path);
    throw fail(`cannot read config file: ${(e as Error).message}`);
  }
  let text: string;
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw fail("cannot read config file: not a regular file");
    if (st.size > MAX_CONFIG_BYTES) {
      throw fail(`cannot read config file: ${st.size} bytes, expected at most ${MAX_CONFIG_BYTES}`);
    }
    text = await fh.readFile("utf8");
  } finally {
    await fh.close();
  }
  return parseConfigText(text, path);
}
