/**
 * McpEngine against a hand-written stdio server that breaks the protocol on request
 * (test/fixtures/mcp/malformed-server.ts): every failure is a clear error, never a hang.
 */
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it, vi } from "vitest";
import { malformedServerCommand } from "../../../test/fixtures/mcp/commands.js";
import { McpEngineError } from "./errors.js";
import { McpEngine, type McpLogEntry } from "./mcp-engine.js";
import { serverEnvironment } from "./server-env.js";

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

const started: McpEngine[] = [];
afterEach(async () => {
  for (const e of started.splice(0)) await e.stop();
});

async function startMalformed(flags: string[] = [], startTimeoutMs = 10_000) {
  const logs: McpLogEntry[] = [];
  const engine = await McpEngine.start(
    { transport: "stdio", ...malformedServerCommand(...flags), env: serverEnvironment({}, "/tmp") },
    {
      name: "bad",
      callTimeoutMs: 10_000,
      maxResultBytes: 4096,
      restart: { initialMs: 20, maxMs: 200 },
      startTimeoutMs,
      onLog: (l) => logs.push(l),
    },
  );
  started.push(engine);
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

describe("McpEngine against a misbehaving server", () => {
  it("follows tools/list pagination, ignoring duplicate and ill-formed names aloud", async () => {
    const { engine, logs } = await startMalformed();
    expect(engine.tools().map((t) => t.name)).toEqual([
      "garbage",
      "not_rpc",
      "wrong_shape",
      "huge",
      "huge_anonymous",
      "ok",
    ]);
    expect(logs.filter((l) => l.level === "warn").map((l) => l.message)).toEqual([
      'ignoring second tool named "ok"',
      'ignoring tool "x >": expected ^[A-Za-z0-9_.-]{1,128}$',
    ]);
  });

  it("fails the call when the server writes something that is not JSON, then restarts it", async () => {
    const { engine } = await startMalformed();
    const e = await rejection(engine.callTool("garbage", {}));
    expect(e.code).toBe("internal");
    expect(e.message).toBe(
      'MCP server "bad" broke the protocol during call "garbage": it wrote output that is not JSON: "this is not json"',
    );
    expect((await engine.callTool("ok", {})).content).toEqual([{ type: "text", text: "fine" }]);
    expect(engine.restarts).toBe(1);
  });

  it("fails the call when the server writes JSON that is not JSON-RPC", async () => {
    const { engine } = await startMalformed();
    const e = await rejection(engine.callTool("not_rpc", {}));
    expect(e.message).toBe(
      'MCP server "bad" broke the protocol during call "not_rpc": it wrote JSON that is not a JSON-RPC message: "{\\"hello\\":\\"world\\"}"',
    );
  });

  it("fails the call when the result has the wrong shape", async () => {
    const { engine } = await startMalformed();
    const e = await rejection(engine.callTool("wrong_shape", {}));
    expect(e.code).toBe("internal");
    expect(e.message).toBe(
      'MCP server "bad" returned a malformed result for "wrong_shape": content: Invalid input: expected array, received string',
    );
  });

  it("fails only the call whose answer is too large; the connection stays up", async () => {
    const { engine } = await startMalformed();
    const pid = engine.pid;
    const e = await rejection(engine.callTool("huge", { bytes: 100_000 }));
    expect(e.code).toBe("too_large");
    expect(e.message).toBe(
      'MCP server "bad" answered "huge" with a message larger than maxResultBytes (4096 bytes)',
    );
    expect((await engine.callTool("ok", {})).isError).toBe(false);
    expect(engine.pid).toBe(pid);
    expect(engine.restarts).toBe(0);
  });

  it("ends the connection when an oversized message answers no identifiable request", async () => {
    const { engine } = await startMalformed();
    const e = await rejection(engine.callTool("huge_anonymous", { bytes: 100_000 }));
    expect(e.message).toBe(
      'MCP server "bad" broke the protocol during call "huge_anonymous": it sent a message of 100011 bytes; the limit is 4096 bytes, and it answers no request we can identify',
    );
  });

  it("fails start in bounded time when the server never answers initialize, and kills it", async () => {
    const logs: McpLogEntry[] = [];
    const e = await rejection(
      McpEngine.start(
        {
          transport: "stdio",
          ...malformedServerCommand("--no-init"),
          env: serverEnvironment({}, "/tmp"),
        },
        {
          name: "mute",
          callTimeoutMs: 1000,
          maxResultBytes: 4096,
          restart: { initialMs: 20, maxMs: 200 },
          startTimeoutMs: 1500,
          onLog: (l) => logs.push(l),
        },
      ),
    );
    expect(e.code).toBe("timeout");
    const pidLine = logs.find((l) => l.message.startsWith("pid "))!.message;
    expect(e.message).toBe(
      `MCP server "mute" did not answer initialize within 1500 ms; its stderr ended with: ${JSON.stringify(pidLine)}`,
    );
    await vi.waitFor(() => expect(alive(Number(pidLine.slice(4)))).toBe(false));
  });
});
