/**
 * Sidecar benchmarks, each beside its baseline in the same run:
 * - an MCP tool call through NATS + the sidecar's five layers + audit, next to the same tool
 *   called directly with McpEngine and next to a bare NATS request/reply to a trivial responder;
 * - a QuickJS tool call through NATS + sidecar, next to QuickJsEngine.invoke directly;
 * - cold start of a QuickJS capsule's sidecar (engine instantiate + subscriptions).
 * The audit chain is durable (fdatasync, group commit) as in production: a reply leaves only
 * after its decisions are on disk, so that cost is part of "enforcement". One more MCP sidecar
 * runs with the opt-in `audit.sync = interval` (decisions acknowledged once written, fdatasync
 * within 10 ms) on the same disk, beside the same tool called directly.
 */
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { connectNatsBus } from "../core/bus/nats.js";
import { loadManifest, parseManifest } from "../core/manifest/index.js";
import { decode, encode } from "../core/protocol/envelope.js";
import { generateIssuerKey, TrustedKeys } from "../core/security/tokens/keys.js";
import { mintToken } from "../core/security/tokens/mint.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../core/security/tokens/verifier.js";
import { assembleSidecar } from "../sidecar/assemble.js";
import { McpEngine } from "../sidecar/engine/mcp/mcp-engine.js";
import { serverEnvironment } from "../sidecar/engine/mcp/server-env.js";
import { QuickJsEngine } from "../sidecar/engine/wasm/quickjs-engine.js";
import { fixtureServerCommand } from "../test/fixtures/mcp/commands.js";
import { RecordingHost } from "../test/fixtures/wasm/recording-host.js";
import { startNatsServer } from "../test/harness/nats-server.js";
import { runSuite } from "./lib.js";

const WASM_DIR = path.resolve("test/fixtures/capsules/wasm-tools");

function mcpManifestText(cmd: { command: string; args: string[] }, tool: string): string {
  return `[package]
name = "mcp-bench"
version = "0.1.0"
description = "bench"
[capabilities]
ipc_subscribe = ["tool.v1.execute.${tool}"]
[mcp]
transport = "stdio"
command = ${JSON.stringify(cmd.command)}
args = ${JSON.stringify(cmd.args)}`;
}

export async function main(): Promise<void> {
  const root = mkdtempSync(path.join(os.tmpdir(), "astrid-bench-sidecar-"));
  const workspace = path.join(root, "ws");
  mkdirSync(workspace, { recursive: true });
  writeFileSync(path.join(workspace, "README.md"), "hello");
  const nats = await startNatsServer();
  const issuer = generateIssuerKey();
  const tokens = new TokenVerifier({
    keys: new TrustedKeys([issuer.publicKey]),
    revocations: new MemoryRevocationSet(),
  });
  const token = mintToken(
    {
      sub: "user:bench",
      res: ["tool:*"],
      perm: ["execute"],
      exp: Math.floor(Date.now() / 1000) + 3600,
    },
    issuer,
  );
  const identity = { key: generateKeyPairSync("ed25519").privateKey, keyId: "bench" };
  const cmd = fixtureServerCommand();
  const mcpManifest = parseManifest(mcpManifestText(cmd, "echo"));
  const wasmManifest = await loadManifest(WASM_DIR);
  const busOf = (name: string) =>
    connectNatsBus({ servers: nats.url, inboxPrefix: `_INBOX.${name}`, onError: () => {} });
  const common = {
    identity,
    tokens,
    requireCallerToken: true,
    mode: "autonomous" as const,
    workspace,
    home: root,
    logger: () => {},
  };
  const mcpBus = await busOf("mcp-bench");
  const mcpSidecar = await assembleSidecar({
    ...common,
    packageDir: root,
    manifest: mcpManifest,
    bus: mcpBus,
    auditDir: path.join(root, "audit-mcp"),
    stateDir: path.join(root, "state-mcp"),
  });
  // The same capsule with its audit chain on tmpfs, where fdatasync costs nothing: the
  // difference between the two rows is the disk, the rest is the enforcement itself.
  const shmBus = await busOf("mcp-shm");
  const shmDir = mkdtempSync(
    path.join(existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir(), "astrid-bench-"),
  );
  const shmSidecar = await assembleSidecar({
    ...common,
    capsule: "mcp-shm",
    packageDir: root,
    manifest: parseManifest(mcpManifestText(cmd, "add")),
    bus: shmBus,
    auditDir: path.join(shmDir, "audit"),
    stateDir: path.join(shmDir, "state"),
  });
  // The same capsule, audit on the same disk, with the opt-in sync "interval": the difference
  // to the first row is what waiting for fdatasync costs each decision.
  const intervalBus = await busOf("mcp-interval");
  const intervalSidecar = await assembleSidecar({
    ...common,
    capsule: "mcp-interval",
    packageDir: root,
    manifest: parseManifest(mcpManifestText(cmd, "big")),
    bus: intervalBus,
    auditDir: path.join(root, "audit-interval"),
    stateDir: path.join(root, "state-interval"),
    auditSync: { sync: "interval", intervalMs: 10 },
  });
  const wasmBus = await busOf("wasm-tools");
  const wasmSidecar = await assembleSidecar({
    ...common,
    packageDir: WASM_DIR,
    manifest: wasmManifest,
    bus: wasmBus,
    auditDir: path.join(root, "audit-wasm"),
    stateDir: path.join(root, "state-wasm"),
  });
  const caller = await busOf("caller");
  const raw = await busOf("raw");
  raw.subscribe("bench.echo", (m) => m.respond(m.data));

  const direct = await McpEngine.start(
    { transport: "stdio", ...cmd, env: serverEnvironment({}, root) },
    {
      name: "direct",
      callTimeoutMs: 10_000,
      maxResultBytes: 1 << 20,
      restart: { initialMs: 100, maxMs: 1000 },
    },
  );
  const quickjs = await QuickJsEngine.create({
    source: readFileSync(path.join(WASM_DIR, "main.js"), "utf8"),
    memoryMb: 24,
    stackKb: 256,
    timeoutMs: 2000,
    name: "direct",
  });
  const host = new RecordingHost();

  const meta = { session: "bench", principal: "user:bench", capsule: "caller" };
  const toolCall = async (tool: string, args: Record<string, unknown>) => {
    const wire = encode(
      "tool.execute.request",
      { callId: "c", tool, arguments: args, token },
      meta,
      { timeoutMs: 10_000 },
    );
    const reply = await caller.request(`tool.v1.execute.${tool}`, wire, { timeoutMs: 10_000 });
    const env = decode(reply.data, { checkDeadline: false });
    if (env.kind !== "tool.result")
      throw new Error(`unexpected ${env.kind}: ${JSON.stringify(env.body)}`);
  };
  const ctx = {
    callId: "c",
    session: "bench",
    principal: "user:bench",
    capsule: "direct",
    token: undefined,
    deadline: Date.now() + 3_600_000,
  };
  const payload = new Uint8Array(200);

  try {
    await runSuite(
      "Sidecar: tool call through NATS + five layers + durable audit",
      [
        {
          name: "raw NATS request/reply (no sidecar)",
          fn: () => raw.request("bench.echo", payload, { timeoutMs: 5000 }),
        },
        { name: "MCP echo, McpEngine direct", fn: () => direct.callTool("echo", { text: "x" }) },
        {
          name: "MCP echo via sidecar + NATS",
          baseline: "MCP echo, McpEngine direct",
          goal: "enforcement < 1 ms p99",
          fn: () => toolCall("echo", { text: "x" }),
        },
        { name: "MCP add, McpEngine direct", fn: () => direct.callTool("add", { a: 1, b: 2 }) },
        {
          name: "MCP add via sidecar + NATS, audit on tmpfs",
          baseline: "MCP add, McpEngine direct",
          fn: () => toolCall("add", { a: 1, b: 2 }),
        },
        {
          name: "MCP big (1 byte), McpEngine direct",
          fn: () => direct.callTool("big", { bytes: 1 }),
        },
        {
          name: "MCP big (1 byte) via sidecar + NATS, audit sync=interval",
          baseline: "MCP big (1 byte), McpEngine direct",
          goal: "enforcement < 1 ms p99",
          fn: () => toolCall("big", { bytes: 1 }),
        },
        {
          name: "QuickJS handler, engine direct",
          fn: () =>
            quickjs.invoke("chat", { messages: [{ role: "user", content: "x" }] }, ctx, host),
        },
        {
          name: "QuickJS read_file via sidecar + NATS",
          baseline: "QuickJS handler, engine direct",
          fn: () => toolCall("read_file", { path: "cwd://README.md" }),
        },
      ],
      { time: 2000, warmupTime: 300 },
    );
    let n = 0;
    await runSuite(
      "Sidecar: cold start of a QuickJS capsule",
      [
        {
          name: "QuickJsEngine.create + first call",
          goal: "< 50 ms",
          fn: async () => {
            const e = await QuickJsEngine.create({
              source: readFileSync(path.join(WASM_DIR, "main.js"), "utf8"),
              memoryMb: 24,
              stackKb: 256,
              timeoutMs: 2000,
              name: "cold",
            });
            await e.invoke("chat", { messages: [] }, ctx, host);
            await e.stop();
          },
        },
        {
          name: "whole sidecar: assemble + serve + close",
          fn: async () => {
            const i = n++;
            const bus = await busOf(`cold${i}`);
            const s = await assembleSidecar({
              ...common,
              capsule: `cold${i}`,
              packageDir: WASM_DIR,
              manifest: wasmManifest,
              bus,
              auditDir: path.join(root, `audit-cold${i}`),
              stateDir: path.join(root, `state-cold${i}`),
            });
            await s.close();
            await bus.close();
          },
        },
      ],
      { time: 1500, warmupTime: 100 },
    );
  } finally {
    await mcpSidecar.close();
    await shmSidecar.close();
    rmSync(shmDir, { recursive: true, force: true });
    await intervalSidecar.close();
    await wasmSidecar.close();
    await direct.stop();
    await quickjs.stop();
    for (const b of [caller, raw, mcpBus, shmBus, intervalBus, wasmBus]) await b.close();
    await nats.dispose();
    rmSync(root, { recursive: true, force: true });
  }
}
