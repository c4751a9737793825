/**
 * Capsule.toml → typed Manifest. TOML syntax, schema and cross-section problems are all
 * collected and reported together, each located to a line, so one run shows every mistake.
 */

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parse as parseToml, TomlError } from "smol-toml";
import type { z } from "zod";
import { formatField, ManifestError, type ManifestIssue, ManifestNotFoundError } from "./errors.js";
import { indexPositions, type KeyPath, locate } from "./locate.js";
import { describeValue, type Manifest, normaliseManifest, rawManifestSchema } from "./schema.js";
import { closestKey } from "./suggest.js";

export const MANIFEST_FILE = "Capsule.toml";

interface PathIssue {
  readonly path: KeyPath;
  readonly message: string;
}

const EXPECTED_TYPE: Record<string, string> = {
  string: "a string",
  number: "a number",
  int: "an integer",
  boolean: "a boolean (true or false)",
  array: "an array",
  object: "a table",
  record: "a table",
};

/** Per-parse error texts for zod's own checks: always "expected …, got …". */
const errorMap = (iss: z.core.$ZodRawIssue): string | undefined => {
  if (iss.code === "invalid_type") {
    const expected = EXPECTED_TYPE[String(iss.expected)] ?? String(iss.expected);
    if (iss.input === undefined) return `required key is missing; expected ${expected}`;
    return `expected ${expected}, got ${describeValue(iss.input)}`;
  }
  if (iss.code === "too_small" && iss.origin === "string") {
    return `expected a non-empty string, got ""`;
  }
  return undefined;
};

interface SchemaDef {
  type: string;
  shape?: Record<string, unknown>;
  innerType?: unknown;
  in?: unknown;
  out?: unknown;
  element?: unknown;
  valueType?: unknown;
}

const defOf = (s: unknown): SchemaDef => (s as { _zod: { def: SchemaDef } })._zod.def;

/** The keys a strict object at `path` accepts, for "did you mean". */
function knownKeysAt(schema: unknown, path: KeyPath): string[] {
  let s: unknown = schema;
  let i = 0;
  for (let guard = 0; guard < 100; guard++) {
    const def = defOf(s);
    switch (def.type) {
      case "optional":
      case "default":
      case "prefault":
      case "nullable":
      case "readonly":
        s = def.innerType;
        continue;
      case "pipe":
        s = defOf(def.in).type === "transform" ? def.out : def.in;
        continue;
      default:
        break;
    }
    if (i === path.length) return def.type === "object" ? Object.keys(def.shape ?? {}) : [];
    const seg = path[i++];
    if (def.type === "object" && typeof seg === "string") s = def.shape?.[seg];
    else if (def.type === "array") s = def.element;
    else if (def.type === "record") s = def.valueType;
    else return [];
    if (s === undefined) return [];
  }
  return [];
}

function zodIssues(error: z.ZodError): PathIssue[] {
  const out: PathIssue[] = [];
  for (const iss of error.issues) {
    const path = iss.path.filter((p): p is string | number => typeof p !== "symbol");
    if (iss.code === "unrecognized_keys") {
      const known = knownKeysAt(rawManifestSchema, path);
      for (const key of iss.keys) {
        const guess = closestKey(key, known);
        const message = guess
          ? `unknown key ${JSON.stringify(key)}; did you mean ${JSON.stringify(guess)}?`
          : `unknown key ${JSON.stringify(key)}; expected one of ${known.join(", ")}`;
        out.push({ path: [...path, key], message });
      }
    } else if (iss.code === "invalid_key") {
      out.push({ path, message: iss.issues[0]?.message ?? iss.message });
    } else {
      out.push({ path, message: iss.message });
    }
  }
  return out;
}

const isTable = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);

/**
 * Checks that span sections. They run on the raw TOML data, whatever else is wrong, so an
 * author sees "two engines" in the same run as a typo elsewhere.
 */
function crossSectionIssues(doc: Record<string, unknown>): PathIssue[] {
  const out: PathIssue[] = [];
  const engines: { label: string; key: string }[] = [];
  if ("wasm" in doc) engines.push({ label: "[wasm]", key: "wasm" });
  if ("mcp" in doc) engines.push({ label: "[mcp]", key: "mcp" });
  if ("mcp_server" in doc) engines.push({ label: "[[mcp_server]]", key: "mcp_server" });
  if ("static" in doc) engines.push({ label: "[static]", key: "static" });
  if ("context_file" in doc && !("static" in doc)) {
    engines.push({ label: "[[context_file]]", key: "context_file" });
  }
  if (engines.length === 0) {
    out.push({
      path: [],
      message: "no engine; expected exactly one of [wasm], [mcp] or [static], found none",
    });
  } else if (engines.length > 1) {
    out.push({
      path: [engines[1]?.key ?? ""],
      message: `expected exactly one engine, found ${engines.map((e) => e.label).join(" and ")}`,
    });
  }
  const hasWasm = "wasm" in doc;
  const handlers = doc.handler;
  if (Array.isArray(handlers) && handlers.length > 0 && !hasWasm) {
    out.push({
      path: ["handler", 0],
      message: "[[handler]] names a function of a wasm guest; expected a [wasm] engine",
    });
  }
  // An MCP server may only see env vars the manifest declares, so the user is asked for them.
  const declared = isTable(doc.env) ? Object.keys(doc.env) : [];
  const passes: [KeyPath, unknown][] = [
    [["mcp", "env"], isTable(doc.mcp) ? doc.mcp.env : undefined],
    [
      ["mcp_server", 0, "env"],
      Array.isArray(doc.mcp_server) && isTable(doc.mcp_server[0])
        ? doc.mcp_server[0].env
        : undefined,
    ],
  ];
  for (const [path, list] of passes) {
    if (!Array.isArray(list)) continue;
    list.forEach((n, i) => {
      if (typeof n === "string" && !declared.includes(n)) {
        out.push({
          path: [...path, i],
          message: `expected a name declared under [env], got ${JSON.stringify(n)}`,
        });
      }
    });
  }
  return out;
}

function tomlSyntaxIssue(file: string, e: TomlError): ManifestIssue {
  const first = e.message.split("\n")[0] ?? e.message;
  const reason = first.replace(/^Invalid TOML document: /, "");
  return {
    file,
    line: e.line,
    column: e.column,
    field: "(toml)",
    message: `invalid TOML: ${reason} (column ${e.column})`,
  };
}

/** Parses and validates Capsule.toml text. Throws ManifestError with every issue found. */
export function parseManifest(source: string, file: string = MANIFEST_FILE): Manifest {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(source) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) throw new ManifestError([tomlSyntaxIssue(file, e)]);
    throw e;
  }
  const problems: PathIssue[] = crossSectionIssues(doc);
  const result = rawManifestSchema.safeParse(doc, { error: errorMap });
  if (!result.success) problems.push(...zodIssues(result.error));
  if (problems.length === 0 && result.success) return normaliseManifest(result.data);

  const positions = indexPositions(source);
  const issues = problems.map((p, order) => {
    const at = locate(positions, p.path);
    return {
      order,
      issue: {
        file,
        line: at.line,
        ...(at.exact ? { column: at.column } : {}),
        field: formatField(p.path),
        message: p.message,
      } satisfies ManifestIssue,
    };
  });
  issues.sort((a, b) => a.issue.line - b.issue.line || a.order - b.order);
  throw new ManifestError(issues.map((i) => i.issue));
}

/** Reads and parses `<dir>/Capsule.toml`. */
export async function loadManifest(dir: string): Promise<Manifest> {
  const path = join(dir, MANIFEST_FILE);
  let source: string;
  try {
    source = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      throw new ManifestNotFoundError(`${path}: no such file; expected a ${MANIFEST_FILE} here`);
    }
    throw e;
  }
  return parseManifest(source, path);
}
