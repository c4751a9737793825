import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ManifestError, ManifestNotFoundError } from "./errors.js";
import { loadManifest, parseManifest } from "./parse.js";

const DOC = new URL("../../docs/capsule-toml.md", import.meta.url);

/** The fenced toml block right after the marker: the doc's example is a test input. */
async function docExample(): Promise<string> {
  const text = await readFile(DOC, "utf8");
  const m = /<!-- example:capsule-toml -->\s*```toml\n([\s\S]*?)```/.exec(text);
  if (!m?.[1]) throw new Error("docs/capsule-toml.md lost its example marker");
  return m[1];
}

describe("parseManifest on valid manifests", () => {
  it("parses the example in docs/capsule-toml.md to the expected structure", async () => {
    const m = parseManifest(await docExample());
    expect(m.package).toEqual({
      name: "github-tools",
      version: "1.4.0",
      description: "GitHub issue and pull-request tools for agents",
      "astrid-version": "^0.5",
      authors: ["Ada <ada@example.com>"],
      license: "Apache-2.0",
      repository: "https://github.com/example/github-tools",
    });
    expect(m.imports).toEqual({
      astrid: {
        llm: { version: "^1.0", optional: false },
        approval: { version: "^1.2", optional: true },
      },
    });
    expect(m.exports).toEqual({ astrid: { tool: "1.1.0" } });
    expect(m.capabilities.fs_read).toEqual([
      { source: "cwd://**", root: "cwd", glob: "**" },
      { source: "home://.config/gh/*.yml", root: "home", glob: ".config/gh/*.yml" },
    ]);
    expect(m.capabilities.fs_write).toEqual([
      { source: "cwd://out/**", root: "cwd", glob: "out/**" },
    ]);
    expect(m.capabilities.net).toEqual([
      {
        source: "api.github.com",
        scheme: "https",
        host: { kind: "name", name: "api.github.com" },
        port: 443,
      },
      {
        source: "uploads.github.com:443",
        scheme: undefined,
        host: { kind: "name", name: "uploads.github.com" },
        port: 443,
      },
      {
        source: "http://10.0.0.5:8080",
        scheme: "http",
        host: { kind: "ip", address: "10.0.0.5" },
        port: 8080,
      },
      {
        source: "10.1.0.0/16:5432",
        scheme: undefined,
        host: { kind: "cidr", network: "10.1.0.0", prefix: 16 },
        port: 5432,
      },
    ]);
    expect(m.capabilities.net_bind).toEqual([]);
    expect(m.capabilities.host_process.map((r) => [r.command, r.args])).toEqual([
      ["git", [{ kind: "literal", value: "status" }]],
      ["git", [{ kind: "literal", value: "log" }, { kind: "rest" }]],
      [
        "gh",
        [{ kind: "literal", value: "pr" }, { kind: "literal", value: "view" }, { kind: "one" }],
      ],
    ]);
    expect(m.capabilities.ipc_publish).toEqual(["session.v1.events.*"]);
    expect(m.capabilities.ipc_subscribe).toEqual([
      "tool.v1.execute.gh_issue_list",
      "tool.v1.describe.github-tools",
    ]);
    expect(m.capabilities.kv).toEqual(["github_cache"]);
    expect(m.env).toEqual({
      GITHUB_TOKEN: {
        type: "secret",
        description: "A fine-grained token with read access to issues",
        required: true,
      },
      GITHUB_API: {
        type: "string",
        description: "API base URL",
        required: false,
        default: "https://api.github.com",
      },
    });
    expect(m.engine).toEqual({
      type: "wasm",
      module: "dist/main.js",
      kind: "quickjs",
      memory_mb: 32,
      timeout_ms: 10000,
      stack_kb: 256,
    });
    expect(m.handlers).toEqual([{ topic: "tool.v1.execute.gh_issue_list", function: "execute" }]);
    expect(m.interceptors).toEqual([
      { event: "llm.v1.chat.*", action: "redactTokens", priority: 10 },
    ]);
    expect(m.budget).toEqual({
      max_session_micro_usd: 5_000_000,
      max_call_micro_usd: 250_000,
      max_session_tokens: 200000,
      max_call_tokens: 8000,
      warn_at_percent: 75,
    });
    expect(m.topics).toEqual([
      { name: "tool.v1.execute.gh_issue_list", description: "List issues of a repository" },
    ]);
  });

  it("fills fail-closed defaults for a minimal manifest", () => {
    const m = parseManifest(
      '[package]\nname = "min"\nversion = "0.1.0"\ndescription = "m"\n\n[wasm]\nmodule = "guest.wasm"\n',
    );
    expect(m.capabilities).toEqual({
      fs_read: [],
      fs_write: [],
      net: [],
      net_bind: [],
      host_process: [],
      ipc_publish: [],
      ipc_subscribe: [],
      kv: [],
    });
    expect(m.imports).toEqual({});
    expect(m.exports).toEqual({});
    expect(m.env).toEqual({});
    expect(m.engine).toEqual({
      type: "wasm",
      module: "guest.wasm",
      kind: "core",
      memory_mb: 64,
      timeout_ms: 30000,
      stack_kb: 256,
    });
    expect(m.budget).toEqual({
      max_session_micro_usd: undefined,
      max_call_micro_usd: undefined,
      max_session_tokens: undefined,
      max_call_tokens: undefined,
      warn_at_percent: 80,
    });
    expect(m.handlers).toEqual([]);
    expect(m.interceptors).toEqual([]);
    expect(m.topics).toEqual([]);
  });

  it("converts USD exactly to micro-dollars", () => {
    const m = parseManifest(
      '[package]\nname = "b"\nversion = "1.0.0"\ndescription = "b"\n[static]\n[budget]\nmax_session_usd = "9007199254.740991"\nmax_call_usd = "0.000001"\n',
    );
    expect(m.budget.max_session_micro_usd).toBe(Number.MAX_SAFE_INTEGER);
    expect(m.budget.max_call_micro_usd).toBe(1);
  });

  it("normalises upstream [[mcp_server]] to the canonical mcp engine", () => {
    const m = parseManifest(`[package]
name = "upstream-mcp"
version = "0.5.0"
description = "upstream layout"

[env.TOKEN]
type = "secret"
description = "t"

[[mcp_server]]
id = "github"
type = "stdio"
command = "github-mcp"
args = ["--read-only"]
env = ["TOKEN"]
`);
    expect(m.engine).toEqual({
      type: "mcp",
      transport: "stdio",
      command: "github-mcp",
      args: ["--read-only"],
      env: ["TOKEN"],
    });
  });

  it("normalises upstream [[context_file]] into a static engine", () => {
    const m = parseManifest(`[package]
name = "rules"
version = "1.0.0"
description = "context only"

[[context_file]]
path = "AGENTS.md"
description = "house rules"

[[context_file]]
path = "docs/style.md"
description = "style"
`);
    expect(m.engine).toEqual({
      type: "static",
      prompts: [],
      context_files: [
        { path: "AGENTS.md", description: "house rules" },
        { path: "docs/style.md", description: "style" },
      ],
    });
  });

  it("merges [[context_file]] into [static]", () => {
    const m = parseManifest(`[package]
name = "rules"
version = "1.0.0"
description = "both"

[static]
prompts = [{ name = "review", file = "prompts/review.md" }]
context_files = [{ path = "A.md", description = "a" }]

[[context_file]]
path = "B.md"
description = "b"
`);
    expect(m.engine).toEqual({
      type: "static",
      prompts: [{ name: "review", file: "prompts/review.md" }],
      context_files: [
        { path: "A.md", description: "a" },
        { path: "B.md", description: "b" },
      ],
    });
  });

  it("parses an http MCP engine", () => {
    const m = parseManifest(
      '[package]\nname = "remote"\nversion = "1.0.0"\ndescription = "r"\n[mcp]\ntransport = "http"\nurl = "https://mcp.example.com/mcp"\n',
    );
    expect(m.engine).toEqual({
      type: "mcp",
      transport: "http",
      url: "https://mcp.example.com/mcp",
      args: [],
      env: [],
    });
  });
});

describe("loadManifest", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("reads <dir>/Capsule.toml and reports errors with its path", async () => {
    const dir = await mkdtemp(join(tmpdir(), "astrid-manifest-"));
    dirs.push(dir);
    await writeFile(join(dir, "Capsule.toml"), await docExample());
    expect((await loadManifest(dir)).package.name).toBe("github-tools");
    await writeFile(join(dir, "Capsule.toml"), '[package]\nname = "x"\n');
    const err = await loadManifest(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ManifestError);
    expect((err as ManifestError).issues[0]?.file).toBe(join(dir, "Capsule.toml"));
  });

  it("names the path when the file is missing", async () => {
    const dir = await mkdtemp(join(tmpdir(), "astrid-manifest-"));
    dirs.push(dir);
    await mkdir(join(dir, "empty"));
    await expect(loadManifest(join(dir, "empty"))).rejects.toThrow(
      new ManifestNotFoundError(
        `${join(dir, "empty", "Capsule.toml")}: no such file; expected a Capsule.toml here`,
      ),
    );
  });
});
