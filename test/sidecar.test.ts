/**
 * The sidecar end to end on a real nats-server whose per-capsule users enforce each capsule's
 * ACL a second time: a QuickJS capsule and a real MCP server (stdio and streamable HTTP) serve
 * tool calls; reads outside the roots, unlisted hosts and commands, foreign topics, missing or
 * wrong tokens, spent budgets and refused approvals are denied, every denial is in the audit
 * chain, and the chain verifies.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditKeyring, verifyChain } from "../core/audit/index.js";
import type { Bus, BusMessage } from "../core/bus/bus.js";
import { PermissionError } from "../core/bus/errors.js";
import { connectNatsBus } from "../core/bus/nats.js";
import { loadManifest, type Manifest, parseManifest } from "../core/manifest/index.js";
import { decode, encode } from "../core/protocol/envelope.js";
import { subjects } from "../core/protocol/topics.js";
import { IpcAcl } from "../core/security/acl/ipc-acl.js";
import { natsAuthorizationConfig, natsUserConfig } from "../core/security/acl/nats-permissions.js";
import { generateIssuerKey, TrustedKeys } from "../core/security/tokens/keys.js";
import { mintToken } from "../core/security/tokens/mint.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../core/security/tokens/verifier.js";
import { type AssembledSidecar, assembleSidecar } from "../sidecar/assemble.js";
import { sidecarNatsPermissions } from "../sidecar/nats-user.js";
import { fixtureServerCommand } from "./fixtures/mcp/commands.js";
import { type HttpFixture, startHttpFixture } from "./fixtures/mcp/server.js";
import { type NatsServerHandle, startNatsServer } from "./harness/nats-server.js";

const WASM_DIR = path.resolve("test/fixtures/capsules/wasm-tools");
const issuer = generateIssuerKey();
const identity = generateKeyPairSync("ed25519").privateKey;
const PASSWORD = "pw";

function mcpManifest(name: string, tools: string[], engine: string): Manifest {
  return parseManifest(
    `[package]
name = "${name}"
version = "0.1.0"
description = "MCP test tools"
[exports.astrid]
tool = "1.0.0"
[capabilities]
ipc_subscribe = ${JSON.stringify([...tools.map((t) => `tool.v1.execute.${t}`), `tool.v1.describe.${name}`])}
${engine}`,
    `${name}/Capsule.toml`,
  );
}

interface Rig {
  nats: NatsServerHandle;
  root: string;
  workspace: string;
  httpUrl: string;
  httpServer: http.Server;
  mcpHttp: HttpFixture;
  caller: Bus;
  approver: Bus;
  buses: Bus[];
  sidecars: Record<string, AssembledSidecar>;
  auditDirs: Record<string, string>;
  approvals: { asked: number; answer: string };
}

let rig: Rig;

function tokenFor(res: string[], principal = "user:alice") {
  return mintToken(
    { sub: principal, res, perm: ["execute", "publish"], exp: Math.floor(Date.now() / 1000) + 600 },
    issuer,
  );
}

async function call(
  tool: string,
  args: Record<string, unknown>,
  token: string | null = tokenFor(["tool:*"]),
  timeoutMs = 5000,
) {
  const wire = encode(
    "tool.execute.request",
    {
      callId: `c-${Math.random().toString(36).slice(2)}`,
      tool,
      arguments: args,
      ...(token ? { token } : {}),
    },
    { session: "s1", principal: "user:alice", capsule: "caller" },
    { timeoutMs },
  );
  const reply = await rig.caller.request(subjects.toolExecute(tool), wire, { timeoutMs });
  return decode(reply.data, { checkDeadline: false });
}

function textOf(env: Awaited<ReturnType<typeof call>>): string {
  if (env.kind === "error") return `error ${(env.body as { message: string }).message}`;
  if (env.kind !== "tool.result") return `unexpected ${env.kind}`;
  const body = env.body as { content: { type: string; text?: string }[] };
  return body.content.map((c) => c.text ?? "").join("");
}

async function auditOf(capsule: string) {
  const dir = rig.auditDirs[capsule]!;
  const lines: {
    action: string;
    decision: string;
    reason: string;
    layer: string;
    target: string;
  }[] = [];
  for (const f of (await import("node:fs"))
    .readdirSync(dir)
    .filter((f) => f.endsWith(".jsonl"))
    .sort()) {
    for (const l of readFileSync(path.join(dir, f), "utf8").split("\n")) {
      if (!l) continue;
      const r = JSON.parse(l);
      if (r.type === "entry") lines.push(r);
    }
  }
  return lines;
}

beforeAll(async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "astrid-sidecar-"));
  const workspace = path.join(root, "ws");
  mkdirSync(path.join(workspace, "out"), { recursive: true });
  writeFileSync(path.join(workspace, "README.md"), "hello from the workspace");
  writeFileSync(path.join(root, "secret.txt"), "outside");

  const httpServer = http.createServer((_req, res) => res.end("pong"));
  await new Promise<void>((r) => httpServer.listen(0, "127.0.0.1", r));
  const httpUrl = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}/ping`;

  const wasmManifest = await loadManifest(WASM_DIR);
  const stdioManifest = mcpManifest(
    "mcp-stdio",
    ["add"],
    `[mcp]\ntransport = "stdio"\ncommand = ${JSON.stringify(fixtureServerCommand().command)}\nargs = ${JSON.stringify(fixtureServerCommand().args)}`,
  );
  const mcpHttp = await startHttpFixture();
  const httpManifest = mcpManifest(
    "mcp-http",
    ["echo"],
    `[mcp]\ntransport = "http"\nurl = "${mcpHttp.url}"`,
  );
  const manifests: Record<string, Manifest> = {
    "wasm-tools": wasmManifest,
    "mcp-stdio": stdioManifest,
    "mcp-http": httpManifest,
  };

  const users = Object.entries(manifests).map(([name, m]) => {
    const acl = new IpcAcl(
      { publish: m.capabilities.ipc_publish, subscribe: m.capabilities.ipc_subscribe },
      { capsuleId: name },
    );
    return natsUserConfig(name, PASSWORD, sidecarNatsPermissions(acl, name));
  });
  users.push(
    natsUserConfig("caller", PASSWORD, {
      publish: { allow: ["tool.v1.execute.*", "llm.v1.chat.*"] },
      subscribe: { allow: ["_INBOX.caller.>"] },
    }),
    natsUserConfig("approver", PASSWORD, {
      publish: { deny: [">"] },
      subscribe: { allow: ["approval.v1.request.*"] },
      allow_responses: { max: 1, expires: "1m" },
    }),
  );
  const nats = await startNatsServer({ config: natsAuthorizationConfig(users) });

  const connect = (user: string) =>
    connectNatsBus({
      servers: nats.url,
      user,
      pass: PASSWORD,
      inboxPrefix: `_INBOX.${user}`,
      onError: () => {},
    });
  const caller = await connect("caller");
  const approver = await connect("approver");
  const approvals = { asked: 0, answer: "deny" };
  approver.subscribe("approval.v1.request.*", (msg: BusMessage) => {
    approvals.asked++;
    const req = decode(msg.data, { checkDeadline: false });
    const body = req.body as { requestId: string };
    msg.respond(
      encode(
        "approval.decision",
        {
          requestId: body.requestId,
          decision: approvals.answer as "deny",
          decidedBy: "user:alice",
        },
        { session: req.session, principal: "user:alice", capsule: "cli" },
      ),
    );
  });

  const tokens = new TokenVerifier({
    keys: new TrustedKeys([issuer.publicKey]),
    revocations: new MemoryRevocationSet(),
  });
  const buses: Bus[] = [caller, approver];
  const sidecars: Record<string, AssembledSidecar> = {};
  const auditDirs: Record<string, string> = {};
  const modes: Record<string, "autonomous" | "guided"> = {
    "wasm-tools": "autonomous",
    "mcp-stdio": "guided",
    "mcp-http": "autonomous",
  };
  for (const [name, manifest] of Object.entries(manifests)) {
    const bus = await connect(name);
    buses.push(bus);
    auditDirs[name] = path.join(root, "audit", name);
    sidecars[name] = await assembleSidecar({
      packageDir: name === "wasm-tools" ? WASM_DIR : root,
      manifest,
      bus,
      auditDir: auditDirs[name]!,
      identity: { key: identity, keyId: "sidecar-test" },
      tokens,
      requireCallerToken: true,
      grantIssuer: issuer,
      mode: modes[name]!,
      workspace,
      home: root,
      stateDir: path.join(root, "state", name),
      approvalTimeoutMs: 3000,
      logger: () => {},
    });
  }
  rig = {
    nats,
    root,
    workspace,
    httpUrl,
    httpServer,
    mcpHttp,
    caller,
    approver,
    buses,
    sidecars,
    auditDirs,
    approvals,
  };
}, 60_000);

afterAll(async () => {
  if (!rig) return;
  for (const s of Object.values(rig.sidecars)) await s.close();
  for (const b of rig.buses) await b.close();
  await rig.mcpHttp.close();
  rig.httpServer.close();
  await rig.nats.dispose();
  rmSync(rig.root, { recursive: true, force: true });
});

describe("sidecar: a QuickJS capsule under the five layers", () => {
  it("serves a tool call that reads inside its root", async () => {
    expect(textOf(await call("read_file", { path: "cwd://README.md" }))).toBe(
      "hello from the workspace",
    );
  });

  it("denies a read outside its roots, naming the gate", async () => {
    const reply = await call("read_file", { path: path.join(rig.root, "secret.txt") });
    expect(reply.body).toMatchObject({ code: "denied" });
    const r = textOf(reply);
    expect(r).toMatch(
      /^error wasm-tools\.readFile: HostError: gate: ".*\/secret\.txt" is outside the workspace root/,
    );
  });

  it("writes only under its fs_write root", async () => {
    expect(textOf(await call("write_file", { path: "cwd://out/a.txt", text: "ok" }))).toBe(
      "written",
    );
    expect(readFileSync(path.join(rig.workspace, "out/a.txt"), "utf8")).toBe("ok");
    expect(textOf(await call("write_file", { path: "cwd://README.md", text: "x" }))).toMatch(
      /gate: ".*README\.md" is inside the workspace root .* but matches no fs_write rule/,
    );
    expect(readFileSync(path.join(rig.workspace, "README.md"), "utf8")).toBe(
      "hello from the workspace",
    );
  });

  it("reaches a listed host and is refused an unlisted one", async () => {
    expect(textOf(await call("fetch", { url: rig.httpUrl }))).toBe("200 pong");
    expect(textOf(await call("fetch", { url: "http://10.1.2.3/x" }))).toMatch(/gate: /);
  });

  it("spawns an allow-listed command and is refused another", async () => {
    expect(textOf(await call("run", { command: "echo", args: ["hi", "there"] }))).toBe("hi there");
    expect(textOf(await call("run", { command: "cat", args: ["/etc/passwd"] }))).toMatch(/gate: /);
  });

  it("is refused a publish on a foreign topic by its IPC ACL", async () => {
    expect(textOf(await call("publish", { subject: "session.v1.events.s1" }))).toBe("published");
    expect(textOf(await call("publish", { subject: "tool.v1.execute.shell" }))).toMatch(
      /acl: publish to "tool\.v1\.execute\.shell" is not allowed/,
    );
  });

  it("refuses calls without a token, with a token for another tool, and with a forged one", async () => {
    expect(textOf(await call("read_file", { path: "cwd://README.md" }, null))).toBe(
      "error token: no capability token presented for tool:read_file",
    );
    expect(
      textOf(await call("read_file", { path: "cwd://README.md" }, tokenFor(["tool:fetch"]))),
    ).toMatch(/^error token: resource "tool:read_file" is outside the token's scope/);
    const forged = tokenFor(["tool:*"]).replace(/.{4}$/, "AAAA");
    expect(textOf(await call("read_file", { path: "cwd://README.md" }, forged))).toMatch(
      /^error token: (bad signature|malformed)/,
    );
  });

  it("stops a model call once the session budget is spent, and refunds nothing it did not spend", async () => {
    const chat = async () => {
      const wire = encode(
        "llm.chat.request",
        { messages: [{ role: "user", content: "hi" }], maxTokens: 100 },
        { session: "budget-1", principal: "user:alice", capsule: "caller" },
        { timeoutMs: 5000 },
      );
      const reply = await rig.caller.request("llm.v1.chat.wasm-tools", wire, {
        timeoutMs: 5000,
        headers: { "astrid-token": tokenFor(["topic:llm.v1.chat.*"]) },
      });
      return decode(reply.data, { checkDeadline: false });
    };
    for (let i = 0; i < 3; i++) {
      const r = await chat();
      expect(r.kind, JSON.stringify(r.body)).toBe("llm.chat.response");
    }
    const fourth = await chat();
    expect(fourth.kind).toBe("error");
    expect(fourth.body).toMatchObject({ code: "budget", layer: "budget" });
    expect((fourth.body as { message: string }).message).toMatch(/session has 0 µUSD left/);
  });

  it("survives hostile guests and keeps serving", async () => {
    expect(textOf(await call("spin", {}))).toMatch(/^error .*(timeout|deadline)/i);
    expect(textOf(await call("hog", {}))).toMatch(/^error .*out of memory/i);
    expect(textOf(await call("read_file", { path: "cwd://README.md" }))).toBe(
      "hello from the workspace",
    );
  });

  it("answers a malformed request with an error instead of silence", async () => {
    const reply = await rig.caller.request(
      "tool.v1.execute.read_file",
      new TextEncoder().encode("{nope"),
      {
        timeoutMs: 2000,
      },
    );
    const env = decode(reply.data, { checkDeadline: false });
    expect(env.kind).toBe("error");
    expect((env.body as { message: string }).message).toMatch(/^message is not UTF-8 JSON/);
  });
});

describe("sidecar: MCP capsules", () => {
  it("serves tools of a real MCP server over stdio and over streamable HTTP", async () => {
    rig.approvals.answer = "allow_once";
    expect(textOf(await call("add", { a: 2, b: 3 }))).toBe("5");
    // add is served by the stdio capsule, echo by the HTTP one: each manifest lists one.
    const r = await call("echo", { text: "over mcp" });
    expect(textOf(r)).toBe("over mcp");
  });

  it("leaves a tool its manifest does not list unserved (no responder)", async () => {
    await expect(call("fail", {})).rejects.toThrow(/no responders/);
  });

  it("asks a person over the bus in guided mode: deny refuses, allow_session is remembered", async () => {
    // mcp-stdio runs guided; add is served only by it.
    rig.approvals.answer = "deny";
    const before = rig.approvals.asked;
    expect(textOf(await call("add", { a: 1, b: 1 }))).toBe("error approval: denied by user:alice");
    rig.approvals.answer = "allow_session";
    expect(textOf(await call("add", { a: 40, b: 2 }))).toBe("42");
    expect(textOf(await call("add", { a: 40, b: 2 }))).toBe("42");
    expect(rig.approvals.asked - before).toBe(2);
    // A different argument is a different action: asked again.
    expect(textOf(await call("add", { a: 1, b: 2 }))).toBe("3");
    expect(rig.approvals.asked - before).toBe(3);
  });
});

describe("defence in depth and the record", () => {
  it("the NATS server itself refuses a capsule's user a publish outside its ACL", async () => {
    const errors: Error[] = [];
    const raw = await connectNatsBus({
      servers: rig.nats.url,
      user: "wasm-tools",
      pass: PASSWORD,
      inboxPrefix: "_INBOX.wasm-tools",
      onError: (e) => errors.push(e),
    });
    raw.publish("tool.v1.execute.shell", new Uint8Array([1]));
    await raw.flush().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    await raw.close();
    expect(errors.some((e) => e instanceof PermissionError)).toBe(true);
  });

  it("has every denial in the audit chains, and the chains verify", async () => {
    const wasm = await auditOf("wasm-tools");
    const denied = wasm.filter((e) => e.decision === "deny");
    const layers = new Set(denied.map((e) => e.layer));
    for (const l of ["gate", "acl", "token", "budget"]) expect(layers.has(l), l).toBe(true);
    expect(denied.some((e) => e.target.endsWith("secret.txt"))).toBe(true);
    expect(denied.some((e) => e.target === "tool.v1.execute.shell")).toBe(true);
    const stdio = await auditOf("mcp-stdio");
    expect(stdio.some((e) => e.layer === "approval" && e.decision === "deny")).toBe(true);
    for (const s of Object.values(rig.sidecars)) await s.audit.close();
    const keyring = new AuditKeyring([["sidecar-test", identity]]);
    for (const [name, dir] of Object.entries(rig.auditDirs)) {
      const v = await verifyChain(dir, keyring);
      expect(v.ok, `${name}: ${v.ok ? "" : v.error.message}`).toBe(true);
    }
  });
});
