/**
 * MCP engine benchmarks: an `echo` tool call through McpEngine next to the same call with a
 * bare SDK Client (the baseline), over stdio and over streamable HTTP, against the real
 * fixture server (test/fixtures/mcp/server.ts) run as child processes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpEngine, type McpEngineOptions } from "../sidecar/engine/mcp/mcp-engine.js";
import { serverEnvironment } from "../sidecar/engine/mcp/server-env.js";
import { fixtureServerCommand } from "../test/fixtures/mcp/commands.js";
import { runSuite } from "./lib.js";

const options: McpEngineOptions = {
  name: "bench",
  callTimeoutMs: 10_000,
  maxResultBytes: 1024 * 1024,
  restart: { initialMs: 100, maxMs: 5000 },
};
const args = { text: "0123456789abcdef" };

/** The fixture's HTTP mode in its own process; resolves with the URL it prints. */
async function startHttpServer(): Promise<{ url: string; child: ChildProcess }> {
  const cmd = fixtureServerCommand();
  const child = spawn(cmd.command, [...cmd.args.slice(0, -1), "--http", "0"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout! });
  const [url] = (await once(lines, "line")) as [string];
  return { url, child };
}

export async function main(): Promise<void> {
  const cmd = fixtureServerCommand();
  const env = serverEnvironment({}, process.cwd());

  const bareStdio = new Client({ name: "bench-bare", version: "0" });
  await bareStdio.connect(new StdioClientTransport({ command: cmd.command, args: cmd.args, env }));
  const engineStdio = await McpEngine.start({ transport: "stdio", ...cmd, env }, options);

  const http = await startHttpServer();
  const bareHttp = new Client({ name: "bench-bare", version: "0" });
  await bareHttp.connect(new StreamableHTTPClientTransport(new URL(http.url)));
  const engineHttp = await McpEngine.start({ transport: "http", url: http.url }, options);

  try {
    await runSuite("MCP tool call (echo)", [
      {
        name: "stdio: bare SDK Client",
        fn: () => bareStdio.callTool({ name: "echo", arguments: args }),
      },
      {
        name: "stdio: McpEngine",
        baseline: "stdio: bare SDK Client",
        goal: "within 10% of bare",
        fn: () => engineStdio.callTool("echo", args),
      },
      {
        name: "http: bare SDK Client",
        fn: () => bareHttp.callTool({ name: "echo", arguments: args }),
      },
      {
        name: "http: McpEngine",
        baseline: "http: bare SDK Client",
        goal: "within 10% of bare",
        fn: () => engineHttp.callTool("echo", args),
      },
    ]);
  } finally {
    await engineStdio.stop();
    await engineHttp.stop();
    await bareStdio.close();
    await bareHttp.close();
    http.child.kill("SIGTERM");
  }
}
