/**
 * Malformed manifests and the exact message each produces. The message is the interface a
 * capsule author sees, so every case pins the whole text: file, line, field and wording.
 */
import { describe, expect, it } from "vitest";
import { ManifestError } from "./errors.js";
import { parseManifest } from "./parse.js";

const PKG = `[package]
name = "demo"
version = "1.0.0"
description = "demo"
`;
const WASM = `
[wasm]
module = "main.js"
`;
/** Lines 1-7: a valid manifest; cases append from line 8. */
const BASE = PKG + WASM;

const cases: readonly (readonly [title: string, source: string, message: string])[] = [
  [
    "TOML syntax error",
    `${BASE}x = = 1\n`,
    "Capsule.toml:8: (toml): invalid TOML: invalid value (column 5)",
  ],
  [
    "TOML table defined twice",
    `${BASE}[wasm]\n`,
    "Capsule.toml:8: (toml): invalid TOML: trying to redefine an already defined table or value (column 2)",
  ],
  ["missing [package]", WASM, "Capsule.toml:1: package: required key is missing; expected a table"],
  [
    "package.name with capitals",
    BASE.replace('name = "demo"', 'name = "Demo"'),
    'Capsule.toml:2: package.name: expected a package name matching ^[a-z][a-z0-9-]{0,62}$, got "Demo"',
  ],
  [
    "package.name not a string",
    BASE.replace('name = "demo"', "name = 7"),
    "Capsule.toml:2: package.name: expected a string, got number 7",
  ],
  [
    "package.version not full semver",
    BASE.replace('version = "1.0.0"', 'version = "1.0"'),
    'Capsule.toml:3: package.version: expected a semver version like "1.2.3", got "1.0"',
  ],
  [
    "package.version with a v prefix",
    BASE.replace('version = "1.0.0"', 'version = "v1.0.0"'),
    'Capsule.toml:3: package.version: expected a semver version like "1.2.3", got "v1.0.0"',
  ],
  [
    "package.version as a TOML date",
    BASE.replace('version = "1.0.0"', "version = 1979-05-27"),
    "Capsule.toml:3: package.version: expected a string, got the date 1979-05-27",
  ],
  [
    "package.description missing",
    BASE.replace('description = "demo"\n', ""),
    "Capsule.toml:1: package.description: required key is missing; expected a string",
  ],
  [
    "package.description empty",
    BASE.replace('description = "demo"', 'description = ""'),
    'Capsule.toml:4: package.description: expected a non-empty description, got ""',
  ],
  [
    "misspelt key reported with the missing one",
    BASE.replace('name = "demo"', 'nmae = "demo"'),
    [
      "Capsule.toml:1: package.name: required key is missing; expected a string",
      'Capsule.toml:2: package.nmae: unknown key "nmae"; did you mean "name"?',
    ].join("\n"),
  ],
  [
    "unknown key with no close match",
    `${PKG}homepage = "x"\n${WASM}`,
    'Capsule.toml:5: package.homepage: unknown key "homepage"; expected one of name, version, description, astrid-version, authors, license, repository',
  ],
  [
    "astrid-version not a range",
    `${PKG}astrid-version = "banana"\n${WASM}`,
    'Capsule.toml:5: package.astrid-version: expected a semver range like "^1.0", got "banana"',
  ],
  [
    "authors not an array",
    `${PKG}authors = "me"\n${WASM}`,
    'Capsule.toml:5: package.authors: expected an array, got "me"',
  ],
  [
    "misspelt section",
    `${BASE}\n[capabilties]\nnet = []\n`,
    'Capsule.toml:9: capabilties: unknown key "capabilties"; did you mean "capabilities"?',
  ],
  [
    "misspelt capability",
    `${BASE}\n[capabilities]\nfs_raed = ["cwd://**"]\n`,
    'Capsule.toml:10: capabilities.fs_raed: unknown key "fs_raed"; did you mean "fs_read"?',
  ],
  [
    "bad net entry in a multi-line array",
    `${BASE}\n[capabilities]\nnet = [\n  "api.example.com",\n  "http//x",\n]\n`,
    'Capsule.toml:12: capabilities.net[1]: expected "host", "host:port", "scheme://host[:port]" or a CIDR, got "http//x"',
  ],
  [
    "net port out of range",
    `${BASE}\n[capabilities]\nnet = ["a.com:70000"]\n`,
    'Capsule.toml:10: capabilities.net[0]: port must be 1-65535 or "*", got "70000" in "a.com:70000"',
  ],
  [
    "net_bind not an array",
    `${BASE}\n[capabilities]\nnet_bind = "0.0.0.0:80"\n`,
    'Capsule.toml:10: capabilities.net_bind: expected an array, got "0.0.0.0:80"',
  ],
  [
    "fs_read escaping the workspace",
    `${BASE}\n[capabilities]\nfs_read = ["cwd://src/**", "cwd://../secrets"]\n`,
    'Capsule.toml:10: capabilities.fs_read[1]: fs path "cwd://../secrets" contains a ".." segment',
  ],
  [
    "fs_write relative without a root",
    `${BASE}\n[capabilities]\nfs_write = ["out/**"]\n`,
    'Capsule.toml:10: capabilities.fs_write[0]: expected "cwd://<glob>", "home://<glob>" or an absolute "/<glob>", got "out/**"',
  ],
  [
    "host_process with ** not last",
    `${BASE}\n[capabilities]\nhost_process = ["git ** log"]\n`,
    'Capsule.toml:10: capabilities.host_process[0]: process rule "git ** log": "**" is only allowed as the last token',
  ],
  [
    "ipc_publish with an empty token",
    `${BASE}\n[capabilities]\nipc_publish = ["tool.v1..x"]\n`,
    'Capsule.toml:10: capabilities.ipc_publish[0]: expected a NATS subject pattern: pattern "tool.v1..x" has an empty token (leading, trailing or double dot)',
  ],
  [
    "ipc_subscribe with > in the middle",
    `${BASE}\n[capabilities]\nipc_subscribe = ["a.>.b"]\n`,
    'Capsule.toml:10: capabilities.ipc_subscribe[0]: expected a NATS subject pattern: pattern "a.>.b": ">" is only allowed as the last token',
  ],
  [
    "kv bucket with capitals",
    `${BASE}\n[capabilities]\nkv = ["Cache"]\n`,
    'Capsule.toml:10: capabilities.kv[0]: expected a bucket name of 1-64 characters [a-z0-9_-], got "Cache"',
  ],
  [
    "import range invalid",
    `${BASE}\n[imports.astrid]\nllm = "one point oh"\n`,
    'Capsule.toml:10: imports.astrid.llm.version: expected a semver range like "^1.0", got "one point oh"',
  ],
  [
    "import given as a number",
    `${BASE}\n[imports.astrid]\nllm = 1\n`,
    'Capsule.toml:10: imports.astrid.llm: expected a semver range string or { version = "<range>", optional = true }, got number 1',
  ],
  [
    "import inline table with a typo",
    `${BASE}\n[imports.astrid]\nllm = { version = "^1", optionl = true }\n`,
    'Capsule.toml:10: imports.astrid.llm.optionl: unknown key "optionl"; did you mean "optional"?',
  ],
  [
    "import namespace with capitals",
    `${BASE}\n[imports.Astrid]\nllm = "^1"\n`,
    'Capsule.toml:9: imports.Astrid: expected a namespace matching ^[a-z][a-z0-9_-]*$, got "Astrid"',
  ],
  [
    "export with a range instead of a version",
    `${BASE}\n[exports.astrid]\nllm = "^1.0"\n`,
    'Capsule.toml:10: exports.astrid.llm: expected a semver version like "1.2.3", got "^1.0"',
  ],
  [
    "env name in lower case",
    `${BASE}\n[env.api_key]\ntype = "secret"\ndescription = "key"\n`,
    'Capsule.toml:9: env.api_key: expected an environment variable name matching ^[A-Z_][A-Z0-9_]*$, got "api_key"',
  ],
  [
    "env type unknown",
    `${BASE}\n[env.API_KEY]\ntype = "password"\ndescription = "key"\n`,
    'Capsule.toml:10: env.API_KEY.type: expected "secret" or "string", got "password"',
  ],
  [
    "secret with a default",
    `${BASE}\n[env.API_KEY]\ntype = "secret"\ndescription = "key"\ndefault = "hunter2"\n`,
    'Capsule.toml:12: env.API_KEY.default: a secret may not have a default; expected no default for type "secret"',
  ],
  [
    "env without description",
    `${BASE}\n[env.REGION]\ntype = "string"\n`,
    "Capsule.toml:9: env.REGION.description: required key is missing; expected a string",
  ],
  [
    "no engine",
    PKG,
    "Capsule.toml:1: (document): no engine; expected exactly one of [wasm], [mcp] or [static], found none",
  ],
  [
    "two engines",
    `${BASE}\n[mcp]\ntransport = "stdio"\ncommand = "server"\n`,
    "Capsule.toml:9: mcp: expected exactly one engine, found [wasm] and [mcp]",
  ],
  [
    "wasm module escaping the package",
    BASE.replace('"main.js"', '"../main.js"'),
    'Capsule.toml:7: wasm.module: expected a relative path inside the package without ".", ".." or empty segments, got "../main.js"',
  ],
  [
    "wasm module with an absolute path",
    BASE.replace('"main.js"', '"/opt/main.js"'),
    'Capsule.toml:7: wasm.module: expected a relative path inside the package, got the absolute path "/opt/main.js"',
  ],
  [
    "wasm module of the wrong type",
    BASE.replace('"main.js"', '"main.py"'),
    'Capsule.toml:7: wasm.module: expected a module ending in ".js" or ".wasm", got "main.py"',
  ],
  [
    "wasm memory too large",
    `${BASE}memory_mb = 2048\n`,
    "Capsule.toml:8: wasm.memory_mb: expected an integer from 1 to 1024, got 2048",
  ],
  [
    "wasm stack above the safe maximum",
    `${BASE}stack_kb = 512\n`,
    "Capsule.toml:8: wasm.stack_kb: expected an integer from 1 to 256, got 512",
  ],
  [
    "wasm kind contradicting the module",
    `${BASE}kind = "core"\n`,
    'Capsule.toml:8: wasm.kind: expected kind "quickjs" for module "main.js", got "core"',
  ],
  [
    "mcp stdio without command",
    `${PKG}\n[mcp]\ntransport = "stdio"\n`,
    'Capsule.toml:6: mcp.command: transport "stdio" needs a command; expected command = "<program>"',
  ],
  [
    "mcp http with a command",
    `${PKG}\n[mcp]\ntransport = "http"\nurl = "https://mcp.example.com/"\ncommand = "srv"\n`,
    'Capsule.toml:9: mcp.command: transport "http" takes no command; expected transport = "stdio" for a local process',
  ],
  [
    "mcp http without url",
    `${PKG}\n[mcp]\ntransport = "http"\n`,
    'Capsule.toml:6: mcp.url: transport "http" needs a url; expected url = "https://…"',
  ],
  [
    "mcp stdio with a url",
    `${PKG}\n[mcp]\ntransport = "stdio"\ncommand = "srv"\nurl = "https://x.example/"\n`,
    'Capsule.toml:9: mcp.url: transport "stdio" takes no url; expected transport = "http" for a url',
  ],
  [
    "import optional flag not a boolean",
    `${BASE}\n[imports.astrid]\nllm = { version = "^1", optional = "yes" }\n`,
    'Capsule.toml:10: imports.astrid.llm.optional: expected a boolean (true or false), got "yes"',
  ],
  [
    "static prompt with neither text nor file",
    `${PKG}\n[static]\nprompts = [{ name = "a" }]\n`,
    "Capsule.toml:7: static.prompts[0]: expected exactly one of text or file, got neither",
  ],
  [
    "mcp url not http",
    `${PKG}\n[mcp]\ntransport = "http"\nurl = "ftp://x"\n`,
    'Capsule.toml:8: mcp.url: expected an http:// or https:// URL, got "ftp://x"',
  ],
  [
    "mcp transport unknown",
    `${PKG}\n[mcp]\ntransport = "sse"\n`,
    'Capsule.toml:7: mcp.transport: expected "stdio" or "http", got "sse"',
  ],
  [
    "mcp passing an undeclared env var",
    `${PKG}\n[mcp]\ntransport = "stdio"\ncommand = "srv"\nenv = ["HOME"]\n`,
    'Capsule.toml:9: mcp.env[0]: expected a name declared under [env], got "HOME"',
  ],
  [
    "mcp cwd outside the package",
    `${PKG}\n[mcp]\ntransport = "stdio"\ncommand = "srv"\ncwd = ".."\n`,
    'Capsule.toml:9: mcp.cwd: expected a relative path inside the package without ".", ".." or empty segments, got ".."',
  ],
  [
    "two [[mcp_server]] entries",
    `${PKG}\n[[mcp_server]]\nid = "a"\ntype = "stdio"\ncommand = "a"\n\n[[mcp_server]]\nid = "b"\ntype = "stdio"\ncommand = "b"\n`,
    "Capsule.toml:6: mcp_server: expected at most one [[mcp_server]]",
  ],
  [
    "[[mcp_server]] with a non-stdio type",
    `${PKG}\n[[mcp_server]]\nid = "a"\ntype = "sse"\ncommand = "a"\n`,
    'Capsule.toml:8: mcp_server[0].type: expected "stdio", got "sse"',
  ],
  [
    "handler with a bad topic pattern",
    `${BASE}\n[[handler]]\ntopic = "tool.v1.>.x"\nfunction = "run"\n`,
    'Capsule.toml:10: handler[0].topic: expected a NATS subject pattern: pattern "tool.v1.>.x": ">" is only allowed as the last token',
  ],
  [
    "handlers as an inline array of tables with a bad function name",
    `handler = [{ topic = "a.b", function = "run" }, { topic = "a.c", function = "1st" }]\n${BASE}`,
    'Capsule.toml:1: handler[1].function: expected an exported function name matching ^[A-Za-z_$][A-Za-z0-9_$]*$, got "1st"',
  ],
  [
    "a key written under the wrong table",
    `${BASE}handler = []\n\n[[interceptor]]\nevent = "llm.v1.request.>"\naction = "1st"\n`,
    [
      'Capsule.toml:8: wasm.handler: unknown key "handler"; expected one of module, kind, memory_mb, timeout_ms, stack_kb',
      'Capsule.toml:12: interceptor[0].action: expected a function name matching ^[A-Za-z_$][A-Za-z0-9_$]*$, got "1st"',
    ].join("\n"),
  ],
  [
    "handler without a wasm engine",
    `${PKG}\n[static]\n\n[[handler]]\ntopic = "a.b"\nfunction = "run"\n`,
    "Capsule.toml:8: handler[0]: [[handler]] names a function of a wasm guest; expected a [wasm] engine",
  ],
  [
    "interceptor priority not an integer",
    `${BASE}\n[[interceptor]]\nevent = "llm.v1.>"\naction = "check"\npriority = 1.5\n`,
    "Capsule.toml:12: interceptor[0].priority: expected an integer from -1000000 to 1000000, got 1.5",
  ],
  [
    "interceptor key misspelt",
    `${BASE}\n[[interceptor]]\nevent = "llm.v1.>"\naction = "check"\nprio = 1\n`,
    'Capsule.toml:12: interceptor[0].prio: unknown key "prio"; expected one of event, action, priority',
  ],
  [
    "budget with seven decimals",
    `${BASE}\n[budget]\nmax_session_usd = "5.0000001"\n`,
    'Capsule.toml:10: budget.max_session_usd: expected a decimal USD amount with at most 6 decimals like "5.00", got "5.0000001"',
  ],
  [
    "budget as a float",
    `${BASE}\n[budget]\nmax_session_usd = 5.0\n`,
    "Capsule.toml:10: budget.max_session_usd: expected a string, got number 5",
  ],
  [
    "budget per-call above per-session",
    `${BASE}\n[budget]\nmax_session_usd = "1.00"\nmax_call_usd = "2.00"\n`,
    "Capsule.toml:11: budget.max_call_usd: expected max_call_usd at most max_session_usd, got a larger value",
  ],
  [
    "budget warn percent zero",
    `${BASE}\n[budget]\nwarn_at_percent = 0\n`,
    "Capsule.toml:10: budget.warn_at_percent: expected an integer from 1 to 100, got 0",
  ],
  [
    "budget tokens negative",
    `${BASE}\n[budget]\nmax_call_tokens = -5\n`,
    "Capsule.toml:10: budget.max_call_tokens: expected an integer from 1 to 9007199254740991, got -5",
  ],
  [
    "static prompt with both text and file",
    `${PKG}\n[static]\nprompts = [\n  { name = "a", text = "hi" },\n  { name = "b", text = "hi", file = "b.md" },\n]\n`,
    "Capsule.toml:9: static.prompts[1]: expected exactly one of text or file, got both",
  ],
  [
    "upstream context_file with an absolute path",
    `${PKG}\n[[context_file]]\npath = "/etc/passwd"\ndescription = "x"\n`,
    'Capsule.toml:7: context_file[0].path: expected a relative path inside the package, got the absolute path "/etc/passwd"',
  ],
  [
    "topic with a wildcard in the middle of a token",
    `${BASE}\n[[topic]]\nname = "a.b*"\ndescription = "x"\n`,
    'Capsule.toml:10: topic[0].name: expected a NATS subject pattern: pattern "a.b*": wildcard inside token "b*"; "*" and ">" must stand alone',
  ],
  [
    "topic schema of the wrong type",
    `${BASE}\n[[topic]]\nname = "a.b"\ndescription = "x"\nschema = 5\n`,
    "Capsule.toml:12: topic[0].schema: expected a schema path or an inline table, got number 5",
  ],
  [
    "several problems at once, in line order",
    `${PKG.replace('"1.0.0"', '"one"')}\n[capabilities]\nnet = ["a.com:0"]\n`,
    [
      "Capsule.toml:1: (document): no engine; expected exactly one of [wasm], [mcp] or [static], found none",
      'Capsule.toml:3: package.version: expected a semver version like "1.2.3", got "one"',
      'Capsule.toml:7: capabilities.net[0]: port must be 1-65535 or "*", got "0" in "a.com:0"',
    ].join("\n"),
  ],
];

describe("parseManifest refuses malformed manifests", () => {
  it("has at least 35 cases", () => {
    expect(cases.length).toBeGreaterThanOrEqual(35);
  });

  it.each(cases)("%s", (_title, source, message) => {
    let caught: unknown;
    try {
      parseManifest(source);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(ManifestError);
    expect((caught as ManifestError).message).toBe(message);
    expect((caught as ManifestError).issues).toHaveLength(message.split("\n").length);
  });

  it("uses the given file name", () => {
    expect(() => parseManifest(`${BASE}memory_mb = 0\n`, "capsules/x/Capsule.toml")).toThrow(
      "capsules/x/Capsule.toml:8: wasm.memory_mb: expected an integer from 1 to 1024, got 0",
    );
  });

  it("carries structured issues with columns where the key is written", () => {
    try {
      parseManifest(`${BASE}\n[capabilities]\nnet = ["ok.com", "bad//x"]\n`);
      expect.unreachable();
    } catch (e) {
      expect((e as ManifestError).issues).toEqual([
        {
          file: "Capsule.toml",
          line: 10,
          column: 18,
          field: "capabilities.net[1]",
          message: 'expected "host", "host:port", "scheme://host[:port]" or a CIDR, got "bad//x"',
        },
      ]);
    }
  });
});
