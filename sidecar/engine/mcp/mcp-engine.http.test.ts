/** McpEngine over streamable HTTP against the real SDK fixture server, started in-process. */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type HttpFixture, startHttpFixture } from "../../../test/fixtures/mcp/server.js";
import { McpEngineError } from "./errors.js";
import { McpEngine, type McpEngineOptions } from "./mcp-engine.js";

const options: McpEngineOptions = {
  name: "remote",
  callTimeoutMs: 10_000,
  maxResultBytes: 64 * 1024,
  restart: { initialMs: 20, maxMs: 200 },
};

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

async function rejection(p: Promise<unknown>): Promise<McpEngineError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(McpEngineError);
  return e as McpEngineError;
}

describe("McpEngine over streamable HTTP", () => {
  let server: HttpFixture;
  let engine: McpEngine;
  const cancelled: number[] = [];
  beforeAll(async () => {
    server = await startHttpFixture(0, { onCancelled: (ms) => cancelled.push(ms) });
    engine = await McpEngine.start({ transport: "http", url: server.url }, options);
  });
  afterAll(async () => {
    await engine.stop();
    await server.close();
  });

  it("lists tools and round-trips echo and add", async () => {
    expect(engine.tools().map((t) => t.name)).toEqual([
      "echo",
      "add",
      "slow",
      "fail",
      "big",
      "log",
      "media",
      "structured",
      "grow",
    ]);
    expect(await engine.callTool("echo", { text: "over http" })).toEqual({
      content: [{ type: "text", text: "over http" }],
      isError: false,
    });
    expect((await engine.callTool("add", { a: 2, b: 3 })).content).toEqual([
      { type: "text", text: "5" },
    ]);
  });

  it("passes a tool error through as isError", async () => {
    expect(await engine.callTool("fail", { message: "nope" })).toEqual({
      content: [{ type: "text", text: "nope" }],
      isError: true,
    });
  });

  it("cancels a call past its deadline, and the cancellation reaches the server", async () => {
    const e = await rejection(engine.callTool("slow", { ms: 30_000 }, { timeoutMs: 300 }));
    expect(e.code).toBe("timeout");
    expect(e.message).toBe(
      'MCP call "slow" to server "remote" timed out after 300 ms; the server was sent notifications/cancelled',
    );
    await vi.waitFor(() => expect(cancelled).toHaveLength(1));
  });

  it("refuses an answer above maxResultBytes and stays usable", async () => {
    const e = await rejection(engine.callTool("big", { bytes: 100 * 1024 }));
    expect(e.code).toBe("too_large");
    expect(e.message).toBe(
      'MCP server "remote" answered "big" with a message larger than maxResultBytes (65536 bytes)',
    );
    expect((await engine.callTool("echo", { text: "ok" })).isError).toBe(false);
  });
});

describe("McpEngine over streamable HTTP: the server goes away", () => {
  it("reports the server unavailable, then reconnects on the next call once it is back", async () => {
    let server = await startHttpFixture(0);
    const { port, url } = server;
    const engine = await McpEngine.start({ transport: "http", url }, options);
    try {
      await server.close();
      const e = await rejection(engine.callTool("echo", { text: "anyone?" }));
      expect(e.code).toBe("unavailable");
      // A pooled keep-alive socket may see the close first; otherwise the dial is refused.
      expect(e.message).toMatch(
        new RegExp(
          `^MCP server "remote" is unavailable at ${escapeRegExp(url)}: fetch failed: (other side closed|connect ECONNREFUSED 127\\.0\\.0\\.1:${port})$`,
        ),
      );
      server = await startHttpFixture(port);
      expect(await engine.callTool("echo", { text: "again" })).toEqual({
        content: [{ type: "text", text: "again" }],
        isError: false,
      });
    } finally {
      await engine.stop();
      await server.close();
    }
  });

  it("opens a new session when a restarted server no longer knows ours", async () => {
    const server = await startHttpFixture(0);
    const engine = await McpEngine.start({ transport: "http", url: server.url }, options);
    try {
      await server.forgetSessions();
      expect((await engine.callTool("echo", { text: "new session" })).content).toEqual([
        { type: "text", text: "new session" },
      ]);
    } finally {
      await engine.stop();
      await server.close();
    }
  });

  it("fails start with a clear error when nothing listens", async () => {
    const server = await startHttpFixture(0);
    await server.close();
    const e = await rejection(McpEngine.start({ transport: "http", url: server.url }, options));
    expect(e.code).toBe("unavailable");
    expect(e.message).toBe(
      `MCP server "remote" is unavailable at ${server.url}: fetch failed: connect ECONNREFUSED 127.0.0.1:${server.port}`,
    );
  });
});
