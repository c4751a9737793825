/** McpEngine over stdio against the real SDK fixture server (test/fixtures/mcp/server.ts). */
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { fixtureServerCommand } from "../../../test/fixtures/mcp/commands.js";
import { McpEngineError } from "./errors.js";
import { McpEngine, type McpEngineOptions, type McpLogEntry } from "./mcp-engine.js";
import { serverEnvironment } from "./server-env.js";

const HOME = "/tmp";

/** Running, not merely unreaped: an orphan's zombie is its new parent's (init's) to reap. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** An engine on a fresh fixture process, with its log collected. */
async function startFixture(overrides: Partial<McpEngineOptions> = {}, env = {}) {
  const logs: McpLogEntry[] = [];
  const engine = await McpEngine.start(
    { transport: "stdio", ...fixtureServerCommand(), env: serverEnvironment(env, HOME) },
    {
      name: "fixture",
      callTimeoutMs: 10_000,
      maxResultBytes: 64 * 1024,
      restart: { initialMs: 20, maxMs: 200 },
      onLog: (l) => logs.push(l),
      ...overrides,
    },
  );
  return { engine, logs };
}

async function rejection(p: Promise<unknown>): Promise<McpEngineError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(McpEngineError);
  return e as McpEngineError;
}

describe("McpEngine over stdio", () => {
  let fx: Awaited<ReturnType<typeof startFixture>>;
  beforeAll(async () => {
    fx = await startFixture();
  });
  afterAll(async () => {
    await fx.engine.stop();
  });

  it("lists the server's tools with description and input schema", () => {
    const tools = fx.engine.tools();
    expect(tools.map((t) => t.name)).toEqual([
      "echo",
      "add",
      "slow",
      "fail",
      "big",
      "log",
      "media",
      "structured",
      "grow",
      "crash",
      "env",
      "grandchild",
    ]);
    const echo = tools.find((t) => t.name === "echo");
    expect(echo?.description).toBe("Returns its text");
    expect(echo?.inputSchema).toMatchObject({
      type: "object",
      properties: { text: { type: "string" } },
      required: ["text"],
    });
  });

  it("round-trips echo and add, also concurrently", async () => {
    expect(await fx.engine.callTool("echo", { text: "hello" })).toEqual({
      content: [{ type: "text", text: "hello" }],
      isError: false,
    });
    const sums = await Promise.all(
      [1, 2, 3, 4, 5].map((n) => fx.engine.callTool("add", { a: n, b: 0.5 })),
    );
    expect(sums.map((r) => r.content)).toEqual(
      ["1.5", "2.5", "3.5", "4.5", "5.5"].map((text) => [{ type: "text", text }]),
    );
  });

  it("passes a tool error through as isError", async () => {
    expect(await fx.engine.callTool("fail", { message: "no such file" })).toEqual({
      content: [{ type: "text", text: "no such file" }],
      isError: true,
    });
  });

  it("maps image, audio and resources to JSON parts without dropping their data", async () => {
    const r = await fx.engine.callTool("media", {});
    expect(r.content).toEqual([
      { type: "json", value: { type: "image", mimeType: "image/png", data: "aGVsbG8=" } },
      { type: "json", value: { type: "audio", mimeType: "audio/wav", data: "d29ybGQ=" } },
      {
        type: "json",
        value: {
          type: "resource",
          uri: "file:///notes.txt",
          mimeType: "text/plain",
          text: "a note",
        },
      },
      {
        type: "json",
        value: {
          type: "resource_link",
          uri: "file:///big.bin",
          name: "big.bin",
          mimeType: "application/octet-stream",
          description: undefined,
        },
      },
    ]);
  });

  it("keeps structuredContent when the server sent no content blocks", async () => {
    const r = await fx.engine.callTool("structured", {});
    expect(r.content).toEqual([{ type: "json", value: { total: 42 } }]);
  });

  it("refuses a tool the server does not list, naming the known ones", async () => {
    const e = await rejection(fx.engine.callTool("rm", {}));
    expect(e.code).toBe("not_found");
    expect(e.message).toBe(
      'MCP server "fixture" has no tool "rm"; known tools: echo, add, slow, fail, big, log, media, structured, grow, crash, env, grandchild',
    );
  });

  it("reports the server's refusal of bad arguments", async () => {
    const r = await fx.engine.callTool("add", { a: "one", b: 2 });
    // The SDK server answers invalid arguments with a tool error, not a JSON-RPC error.
    expect(r.isError).toBe(true);
    expect(r.content[0]).toMatchObject({ type: "text" });
  });

  it("cancels a call past its deadline, and the cancellation reaches the server", async () => {
    const e = await rejection(fx.engine.callTool("slow", { ms: 30_000 }, { timeoutMs: 300 }));
    expect(e.code).toBe("timeout");
    expect(e.message).toBe(
      'MCP call "slow" to server "fixture" timed out after 300 ms; the server was sent notifications/cancelled',
    );
    await vi.waitFor(() =>
      expect(
        fx.logs.some((l) => l.source === "server" && l.message.startsWith("slow: cancelled")),
      ).toBe(true),
    );
    expect(await fx.engine.callTool("echo", { text: "still here" })).toMatchObject({
      isError: false,
    });
  });

  it("cancels a call its caller aborts", async () => {
    const before = fx.logs.filter((l) => l.message.startsWith("slow: cancelled")).length;
    const ac = new AbortController();
    const call = fx.engine.callTool("slow", { ms: 30_000 }, { signal: ac.signal });
    setTimeout(() => ac.abort("tool.v1.cancel"), 200);
    const e = await rejection(call);
    expect(e.code).toBe("cancelled");
    expect(e.message).toBe(
      'MCP call "slow" to server "fixture" was cancelled by the caller (tool.v1.cancel); the server was sent notifications/cancelled',
    );
    await vi.waitFor(() =>
      expect(fx.logs.filter((l) => l.message.startsWith("slow: cancelled")).length).toBe(
        before + 1,
      ),
    );
  });

  it("refuses a result above maxResultBytes and stays usable", async () => {
    const pid = fx.engine.pid;
    const e = await rejection(fx.engine.callTool("big", { bytes: 100 * 1024 }));
    expect(e.code).toBe("too_large");
    expect(e.message).toBe(
      'MCP server "fixture" answered "big" with a message larger than maxResultBytes (65536 bytes)',
    );
    expect((await fx.engine.callTool("big", { bytes: 10 })).content).toEqual([
      { type: "text", text: "x".repeat(10) },
    ]);
    expect(fx.engine.pid).toBe(pid);
  });

  it("passes stderr to the log line by line, cutting long lines", async () => {
    await fx.engine.callTool("log", { text: "first" });
    await fx.engine.callTool("log", { text: "y".repeat(10_000) });
    const server = fx.logs.filter((l) => l.source === "server").map((l) => l.message);
    expect(server).toContain("first");
    const cut = server.find((m) => m.startsWith("yyy"));
    expect(cut).toBe(`${"y".repeat(256)}… (line of 10000 bytes cut)`);
  });
});

describe("McpEngine over stdio: process lifecycle", () => {
  const started: McpEngine[] = [];
  const track = async (overrides: Partial<McpEngineOptions> = {}, env = {}) => {
    const fx = await startFixture(overrides, env);
    started.push(fx.engine);
    return fx;
  };
  afterEach(async () => {
    for (const e of started.splice(0)) await e.stop();
  });

  it("fails the call in flight when the server crashes, restarts it, and the next call works", async () => {
    const { engine, logs } = await track();
    const firstPid = engine.pid!;
    const e = await rejection(engine.callTool("crash", {}));
    expect(e.code).toBe("unavailable");
    expect(e.message).toBe('MCP server "fixture" exited with code 3 during call "crash"');
    expect(await engine.callTool("echo", { text: "back" })).toEqual({
      content: [{ type: "text", text: "back" }],
      isError: false,
    });
    expect(engine.restarts).toBe(1);
    expect(engine.pid).not.toBe(firstPid);
    expect(alive(firstPid)).toBe(false);
    const engineLog = logs.filter((l) => l.source === "engine").map((l) => l.message);
    expect(engineLog).toEqual([
      'MCP server "fixture" exited with code 3',
      'restarting MCP server "fixture" in 20 ms (attempt 1)',
      'restarted MCP server "fixture" (attempt 1)',
    ]);
  });

  it("keeps restarting a server that fails to come back, with growing delays, until it does", async () => {
    // The first start runs the fixture; while the marker exists, every restart fails at once.
    const dir = await mkdtemp(path.join(tmpdir(), "astrid-mcp-"));
    const marker = path.join(dir, "started");
    const cmd = fixtureServerCommand();
    const script = 'if [ -e "$1" ]; then echo broken >&2; exit 5; fi; touch "$1"; shift; exec "$@"';
    const logs: McpLogEntry[] = [];
    const engine = await McpEngine.start(
      {
        transport: "stdio",
        command: "/bin/sh",
        args: ["-c", script, "sh", marker, cmd.command, ...cmd.args],
        env: serverEnvironment({}, HOME),
      },
      {
        name: "fixture",
        callTimeoutMs: 10_000,
        maxResultBytes: 64 * 1024,
        restart: { initialMs: 20, maxMs: 200 },
        onLog: (l) => logs.push(l),
      },
    );
    started.push(engine);
    try {
      await rejection(engine.callTool("crash", {}));
      const e = await rejection(engine.callTool("echo", { text: "x" }, { timeoutMs: 2000 }));
      expect(e.code).toBe("unavailable");
      expect(e.message).toBe(
        'MCP server "fixture" is unavailable (MCP server "fixture" exited with code 5 before it answered initialize; its stderr ended with: "broken"); call "echo" gave up waiting for it',
      );
      const engineLog = logs.filter((l) => l.source === "engine").map((l) => l.message);
      expect(engineLog.slice(0, 6)).toEqual([
        'MCP server "fixture" exited with code 3',
        'restarting MCP server "fixture" in 20 ms (attempt 1)',
        'restart attempt 1 failed: MCP server "fixture" exited with code 5 before it answered initialize; its stderr ended with: "broken"',
        'restarting MCP server "fixture" in 40 ms (attempt 2)',
        'restart attempt 2 failed: MCP server "fixture" exited with code 5 before it answered initialize; its stderr ended with: "broken"',
        'restarting MCP server "fixture" in 80 ms (attempt 3)',
      ]);
      expect(engineLog).toContain('restarting MCP server "fixture" in 200 ms (attempt 6)');
      await rm(marker);
      expect((await engine.callTool("echo", { text: "healed" })).content).toEqual([
        { type: "text", text: "healed" },
      ]);
      expect(engine.restarts).toBe(1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("lists tools again when the server announces tools/list_changed", async () => {
    const changed: string[][] = [];
    const { engine } = await track({ onToolsChanged: (t) => changed.push(t.map((x) => x.name)) });
    await engine.callTool("grow", {});
    await vi.waitFor(() => expect(changed).toHaveLength(1));
    expect(changed[0]?.at(-1)).toBe("late");
    expect(engine.tools().map((t) => t.name)).toContain("late");
    expect((await engine.callTool("late", {})).content).toEqual([{ type: "text", text: "late" }]);
  });

  it("gives the server only the environment it was handed", async () => {
    process.env.ASTRID_SIDECAR_SECRET = "must-not-leak";
    try {
      const { engine } = await track({}, { GREETING: "hi" });
      const r = await engine.callTool("env", {});
      const env = JSON.parse((r.content[0] as { text: string }).text) as Record<string, string>;
      expect(env.ASTRID_SIDECAR_SECRET).toBeUndefined();
      expect(env.GREETING).toBe("hi");
      expect(env.HOME).toBe(HOME);
      expect(env.PATH).toBe(process.env.PATH);
      expect(Object.keys(env).sort()).toEqual(["GREETING", "HOME", "PATH"]);
    } finally {
      delete process.env.ASTRID_SIDECAR_SECRET;
    }
  });

  it("stop() ends the server and the processes it started", async () => {
    const { engine } = await track();
    const pid = engine.pid!;
    const r = await engine.callTool("grandchild", {});
    const grandchild = Number((r.content[0] as { text: string }).text);
    expect(alive(pid)).toBe(true);
    expect(alive(grandchild)).toBe(true);
    await engine.stop();
    expect(alive(pid)).toBe(false);
    await vi.waitFor(() => expect(alive(grandchild)).toBe(false));
    const e = await rejection(engine.callTool("echo", { text: "x" }));
    expect(e.message).toBe('MCP server "fixture" is stopped');
  });

  it("fails a call that is in flight when stop() is called", async () => {
    const { engine } = await track();
    const call = engine.callTool("slow", { ms: 30_000 });
    await vi.waitFor(() => expect(engine.inFlight).toBe(1));
    await engine.stop();
    const e = await rejection(call);
    expect(e.code).toBe("unavailable");
    expect(e.message).toBe('MCP server "fixture" was stopped during call "slow"');
  });

  it("fails start with a clear error when the command cannot run", async () => {
    const e = await rejection(
      McpEngine.start(
        { transport: "stdio", command: "/nonexistent/mcp-server", env: { PATH: "/usr/bin" } },
        {
          name: "ghost",
          callTimeoutMs: 1000,
          maxResultBytes: 1024,
          restart: { initialMs: 10, maxMs: 10 },
        },
      ),
    );
    expect(e.code).toBe("unavailable");
    expect(e.message).toBe(
      'MCP server "ghost": cannot start "/nonexistent/mcp-server": spawn /nonexistent/mcp-server ENOENT',
    );
  });
});
