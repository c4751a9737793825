/**
 * The Capsule.toml schema: the single source of truth for the manifest. Types are inferred
 * from it, the parser validates with it, and docs/capsule-toml.md describes exactly these keys.
 *
 * Every object is strict: an unknown key is an error, because a misspelt capability key
 * (`fs_raed`) silently granting nothing is confusing, and a misspelt limit silently falling
 * back to a default is worse.
 */

import semver from "semver";
import { z } from "zod";
import { assertPattern } from "../bus/subject.js";
import {
  type FsRule,
  type NetRule,
  type ProcessRule,
  parseFsRule,
  parseKvBucket,
  parseNetRule,
  parseProcessRule,
} from "./capability-rules.js";
import { usdToMicro } from "./money.js";

const q = (s: unknown): string => JSON.stringify(s);

export const PACKAGE_NAME = /^[a-z][a-z0-9-]{0,62}$/;
export const INTERFACE_NAME = /^[a-z][a-z0-9_-]*$/;
export const ENV_NAME = /^[A-Z_][A-Z0-9_]*$/;
const FUNCTION_NAME = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** Refines a string with a check that returns an error text (expected + found) or undefined. */
function checkedString(check: (s: string) => string | undefined) {
  return z.string().superRefine((s, ctx) => {
    const error = check(s);
    if (error) ctx.addIssue({ code: "custom", message: error, input: s });
  });
}

/** A string turned into a structured value by one of the capability-rule parsers. */
function parsedString<T>(parse: (s: string) => T) {
  return z.string().transform((s, ctx): T => {
    try {
      return parse(s);
    } catch (e) {
      ctx.addIssue({ code: "custom", message: (e as Error).message, input: s });
      return z.NEVER;
    }
  });
}

function intIn(min: number, max: number) {
  return z.number().superRefine((n, ctx) => {
    if (!Number.isInteger(n) || n < min || n > max) {
      ctx.addIssue({
        code: "custom",
        message: `expected an integer from ${min} to ${max}, got ${n}`,
        input: n,
      });
    }
  });
}

const exactVersion = checkedString((v) =>
  semver.valid(v) === v ? undefined : `expected a semver version like "1.2.3", got ${q(v)}`,
);

const versionRange = checkedString((r) =>
  r.trim() !== "" && semver.validRange(r) !== null
    ? undefined
    : `expected a semver range like "^1.0", got ${q(r)}`,
);

/** A path inside the package: the engine may only load what the package digest covers. */
export function packagePathError(p: string): string | undefined {
  const expected = "expected a relative path inside the package";
  if (p === "") return `${expected}, got ""`;
  if (p.startsWith("/")) return `${expected}, got the absolute path ${q(p)}`;
  if (p.includes("\\") || p.includes("\u0000")) return `${expected} using "/", got ${q(p)}`;
  if (p.split("/").some((s) => s === ".." || s === "." || s === "")) {
    return `${expected} without ".", ".." or empty segments, got ${q(p)}`;
  }
  return undefined;
}

const packagePath = checkedString(packagePathError);

const name = (pattern: RegExp, what: string) =>
  z.string().regex(pattern, {
    error: (iss) => `expected ${what} matching ${pattern.source}, got ${q(iss.input)}`,
  });

const natsPattern = checkedString((p) => {
  try {
    assertPattern(p);
    return undefined;
  } catch (e) {
    return `expected a NATS subject pattern: ${(e as Error).message}`;
  }
});

// ----- [package] -------------------------------------------------------------------------------

const packageSection = z.strictObject({
  name: name(PACKAGE_NAME, "a package name"),
  version: exactVersion,
  description: z.string().min(1, { error: 'expected a non-empty description, got ""' }),
  "astrid-version": versionRange.optional(),
  authors: z.array(z.string()).default([]),
  license: z.string().optional(),
  repository: z.string().optional(),
});

// ----- [imports] / [exports] -------------------------------------------------------------------

const importSpec = z.preprocess(
  (v) => (typeof v === "string" ? { version: v } : v),
  z.strictObject(
    { version: versionRange, optional: z.boolean().default(false) },
    {
      error: (iss) =>
        iss.code === "invalid_type"
          ? `expected a semver range string or { version = "<range>", optional = true }, got ${describeValue(iss.input)}`
          : undefined,
    },
  ),
);

const imports = z
  .record(
    name(INTERFACE_NAME, "a namespace"),
    z.record(name(INTERFACE_NAME, "an interface name"), importSpec),
  )
  .default({});

const exportsSection = z
  .record(
    name(INTERFACE_NAME, "a namespace"),
    z.record(name(INTERFACE_NAME, "an interface name"), exactVersion),
  )
  .default({});

// ----- [capabilities] --------------------------------------------------------------------------

const capabilities = z
  .strictObject({
    fs_read: z.array(parsedString<FsRule>(parseFsRule)).default([]),
    fs_write: z.array(parsedString<FsRule>(parseFsRule)).default([]),
    net: z.array(parsedString<NetRule>(parseNetRule)).default([]),
    net_bind: z.array(parsedString<NetRule>(parseNetRule)).default([]),
    host_process: z.array(parsedString<ProcessRule>(parseProcessRule)).default([]),
    ipc_publish: z.array(natsPattern).default([]),
    ipc_subscribe: z.array(natsPattern).default([]),
    kv: z.array(parsedString<string>(parseKvBucket)).default([]),
  })
  .default({
    fs_read: [],
    fs_write: [],
    net: [],
    net_bind: [],
    host_process: [],
    ipc_publish: [],
    ipc_subscribe: [],
    kv: [],
  });

// ----- [env.NAME] ------------------------------------------------------------------------------

const envVar = z
  .strictObject({
    type: z.enum(["secret", "string"], {
      error: (iss) => `expected "secret" or "string", got ${describeValue(iss.input)}`,
    }),
    description: z.string(),
    required: z.boolean().default(true),
    default: z.string().optional(),
    /** Upstream's text shown when asking the user for the value. */
    prompt: z.string().optional(),
  })
  .superRefine((v, ctx) => {
    // A default for a secret would ship the secret inside the package for everyone to read.
    if (v.type === "secret" && v.default !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["default"],
        message: 'a secret may not have a default; expected no default for type "secret"',
      });
    }
  });

const env = z.record(name(ENV_NAME, "an environment variable name"), envVar).default({});

// ----- engines ---------------------------------------------------------------------------------

const wasm = z
  .strictObject({
    module: checkedString((p) => {
      const bad = packagePathError(p);
      if (bad) return bad;
      if (!p.endsWith(".js") && !p.endsWith(".wasm")) {
        return `expected a module ending in ".js" or ".wasm", got ${q(p)}`;
      }
      return undefined;
    }),
    kind: z
      .enum(["quickjs", "core"], {
        error: (iss) => `expected "quickjs" or "core", got ${describeValue(iss.input)}`,
      })
      .optional(),
    memory_mb: intIn(1, 1024).default(64),
    timeout_ms: intIn(1, 3_600_000).default(30_000),
    // Deeper QuickJS stacks crash the host instead of failing the guest.
    stack_kb: intIn(1, 256).default(256),
  })
  .superRefine((w, ctx) => {
    const wanted = w.module.endsWith(".wasm") ? "core" : "quickjs";
    if (w.kind !== undefined && w.kind !== wanted) {
      ctx.addIssue({
        code: "custom",
        path: ["kind"],
        message: `expected kind "${wanted}" for module ${q(w.module)}, got ${q(w.kind)}`,
      });
    }
  })
  .transform((w) => ({
    ...w,
    kind: w.kind ?? (w.module.endsWith(".wasm") ? ("core" as const) : ("quickjs" as const)),
  }));

const httpUrl = checkedString((u) => {
  try {
    const url = new URL(u);
    if (url.protocol === "http:" || url.protocol === "https:") return undefined;
  } catch {
    // fall through to the message below
  }
  return `expected an http:// or https:// URL, got ${q(u)}`;
});

const mcp = z
  .strictObject({
    transport: z.enum(["stdio", "http"], {
      error: (iss) => `expected "stdio" or "http", got ${describeValue(iss.input)}`,
    }),
    command: z.string().min(1, { error: 'expected a command, got ""' }).optional(),
    args: z.array(z.string()).default([]),
    cwd: packagePath.optional(),
    /** Declared [env] names passed to the server process; nothing else of the host's env is. */
    env: z.array(name(ENV_NAME, "an environment variable name")).default([]),
    url: httpUrl.optional(),
  })
  .superRefine((m, ctx) => {
    if (m.transport === "stdio") {
      if (m.command === undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["command"],
          message: 'transport "stdio" needs a command; expected command = "<program>"',
        });
      }
      if (m.url !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["url"],
          message: 'transport "stdio" takes no url; expected transport = "http" for a url',
        });
      }
    } else {
      if (m.url === undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["url"],
          message: 'transport "http" needs a url; expected url = "https://…"',
        });
      }
      for (const key of ["command", "cwd"] as const) {
        if (m[key] !== undefined) {
          ctx.addIssue({
            code: "custom",
            path: [key],
            message: `transport "http" takes no ${key}; expected transport = "stdio" for a local process`,
          });
        }
      }
      if (m.args.length > 0) {
        ctx.addIssue({
          code: "custom",
          path: ["args"],
          message:
            'transport "http" takes no args; expected transport = "stdio" for a local process',
        });
      }
    }
  });

/** Upstream's `[[mcp_server]]` entry (stdio only). */
const mcpServer = z.strictObject({
  id: z.string(),
  type: z.literal("stdio", {
    error: (iss) => `expected "stdio", got ${describeValue(iss.input)}`,
  }),
  command: z.string().min(1, { error: 'expected a command, got ""' }),
  args: z.array(z.string()).default([]),
  env: z.array(name(ENV_NAME, "an environment variable name")).default([]),
});

const contextFile = z.strictObject({ path: packagePath, description: z.string() });

const prompt = z
  .strictObject({
    name: z.string().min(1),
    text: z.string().optional(),
    file: packagePath.optional(),
  })
  .superRefine((p, ctx) => {
    if ((p.text === undefined) === (p.file === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: [],
        message: `expected exactly one of text or file, got ${p.text === undefined ? "neither" : "both"}`,
      });
    }
  });

const staticSection = z.strictObject({
  prompts: z.array(prompt).default([]),
  context_files: z.array(contextFile).default([]),
});

// ----- handlers, interceptors, budget, topics --------------------------------------------------

const handler = z.strictObject({
  topic: natsPattern,
  function: name(FUNCTION_NAME, "an exported function name"),
});

const interceptor = z.strictObject({
  event: natsPattern,
  action: name(FUNCTION_NAME, "a function name"),
  /** Lower fires first. */
  priority: intIn(-1_000_000, 1_000_000).default(100),
});

const usd = z.string().transform((s, ctx) => {
  const r = usdToMicro(s);
  if (!r.ok) {
    ctx.addIssue({ code: "custom", message: r.error, input: s });
    return z.NEVER;
  }
  return r.micro;
});

const budget = z
  .strictObject({
    max_session_usd: usd.optional(),
    max_call_usd: usd.optional(),
    max_session_tokens: intIn(1, Number.MAX_SAFE_INTEGER).optional(),
    max_call_tokens: intIn(1, Number.MAX_SAFE_INTEGER).optional(),
    warn_at_percent: intIn(1, 100).default(80),
  })
  .superRefine((b, ctx) => {
    const pairs = [
      ["max_call_usd", "max_session_usd"],
      ["max_call_tokens", "max_session_tokens"],
    ] as const;
    for (const [call, session] of pairs) {
      const c = b[call];
      const s = b[session];
      if (c !== undefined && s !== undefined && c > s) {
        ctx.addIssue({
          code: "custom",
          path: [call],
          message: `expected ${call} at most ${session}, got a larger value`,
        });
      }
    }
  })
  .transform((b) => ({
    max_session_micro_usd: b.max_session_usd,
    max_call_micro_usd: b.max_call_usd,
    max_session_tokens: b.max_session_tokens,
    max_call_tokens: b.max_call_tokens,
    warn_at_percent: b.warn_at_percent,
  }));

const topic = z.strictObject({
  name: natsPattern,
  description: z.string(),
  schema: z
    .union([z.string(), z.record(z.string(), z.unknown())], {
      error: (iss) => `expected a schema path or an inline table, got ${describeValue(iss.input)}`,
    })
    .optional(),
});

// ----- the document ----------------------------------------------------------------------------

/** Capsule.toml as written (upstream layout included), before engine normalisation. */
export const rawManifestSchema = z.strictObject({
  package: packageSection,
  imports,
  exports: exportsSection,
  capabilities,
  env,
  wasm: wasm.optional(),
  mcp: mcp.optional(),
  static: staticSection.optional(),
  context_file: z.array(contextFile).optional(),
  mcp_server: z
    .array(mcpServer)
    .max(1, { error: "expected at most one [[mcp_server]]" })
    .optional(),
  handler: z.array(handler).default([]),
  interceptor: z.array(interceptor).default([]),
  budget: budget.default({
    max_session_micro_usd: undefined,
    max_call_micro_usd: undefined,
    max_session_tokens: undefined,
    max_call_tokens: undefined,
    warn_at_percent: 80,
  }),
  topic: z.array(topic).default([]),
});

export type RawManifest = z.output<typeof rawManifestSchema>;

type Wasm = z.output<typeof wasm>;
type Mcp = z.output<typeof mcp>;
type Static = z.output<typeof staticSection>;

export type Engine =
  | ({ readonly type: "wasm" } & Wasm)
  | ({ readonly type: "mcp" } & Mcp)
  | ({ readonly type: "static" } & Static);

/** Canonical form: exactly one engine, upstream spellings folded into ours. */
export function normaliseManifest(raw: RawManifest) {
  let engine: Engine | undefined;
  if (raw.wasm) engine = { type: "wasm", ...raw.wasm };
  else if (raw.mcp) engine = { type: "mcp", ...raw.mcp };
  else if (raw.mcp_server?.[0]) {
    const s = raw.mcp_server[0];
    engine = { type: "mcp", transport: "stdio", command: s.command, args: s.args, env: s.env };
  } else if (raw.static || raw.context_file) {
    engine = {
      type: "static",
      prompts: raw.static?.prompts ?? [],
      context_files: [...(raw.static?.context_files ?? []), ...(raw.context_file ?? [])],
    };
  }
  if (!engine)
    throw new Error("normaliseManifest: no engine; parseManifest refuses such documents first");
  return {
    package: raw.package,
    imports: raw.imports,
    exports: raw.exports,
    capabilities: raw.capabilities,
    env: raw.env,
    engine,
    handlers: raw.handler,
    interceptors: raw.interceptor,
    budget: raw.budget,
    topics: raw.topic,
  };
}

export const manifestSchema = rawManifestSchema.transform(normaliseManifest);

export type Manifest = z.output<typeof manifestSchema>;

export function describeValue(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "string") return q(v);
  if (Array.isArray(v)) return "an array";
  if (v !== null && typeof v === "object") {
    return v instanceof Date ? `the date ${v.toISOString()}` : "a table";
  }
  return `${typeof v} ${String(v)}`;
}
