/**
 * `astrid-sidecar` as a process: configured by flags, it serves a QuickJS capsule on a real
 * nats-server, answers /readyz and /metrics, drains on SIGTERM with exit 0, and leaves an audit
 * chain that verifies. Bad configuration exits 2 with a message naming the field.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditKeyring, verifyChain } from "../core/audit/index.js";
import { connectNatsBus, type NatsBus } from "../core/bus/nats.js";
import { decode, encode } from "../core/protocol/envelope.js";
import { generateIssuerKey } from "../core/security/tokens/keys.js";
import { mintToken } from "../core/security/tokens/mint.js";
import { type NatsServerHandle, startNatsServer } from "./harness/nats-server.js";

const run = promisify(execFile);
const MAIN = path.resolve("sidecar/main.ts");
const WASM_DIR = path.resolve("test/fixtures/capsules/wasm-tools");

let nats: NatsServerHandle;
let root: string;
let child: ChildProcess;
let caller: NatsBus;
let httpUrl: string;
const lines: Record<string, unknown>[] = [];
const issuer = generateIssuerKey();
const { privateKey } = generateKeyPairSync("ed25519");

beforeAll(async () => {
  nats = await startNatsServer();
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-sidecar-proc-"));
  mkdirSync(path.join(root, "ws"));
  writeFileSync(path.join(root, "ws", "README.md"), "from the process test");
  writeFileSync(path.join(root, "id.pem"), privateKey.export({ type: "pkcs8", format: "pem" }));
  writeFileSync(
    path.join(root, "issuer.pem"),
    issuer.publicKey.export({ type: "spki", format: "pem" }),
  );
  // biome-ignore format: one flag per line reads best
  const args = [
    "--import", "tsx", MAIN,
    "--package-dir", WASM_DIR,
    "--identity-key-file", path.join(root, "id.pem"),
    "--identity-key-id", "proc",
    "--bus-kind", "nats", "--bus-url", nats.url,
    "--audit-dir", path.join(root, "audit"),
    "--revocation-kind", "file", "--revocation-path", path.join(root, "revoked.jsonl"),
    "--trusted-issuer-keys", path.join(root, "issuer.pem"),
    "--mode", "autonomous",
    "--workspace", path.join(root, "ws"),
    "--http-port", "0",
  ];
  child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  const rl = createInterface({ input: child.stdout! });
  let stderr = "";
  child.stderr!.on("data", (d) => {
    stderr += d;
  });
  httpUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sidecar did not start:\n${stderr}`)), 30_000);
    rl.on("line", (l) => {
      const rec = JSON.parse(l) as Record<string, unknown>;
      lines.push(rec);
      if (rec.msg === "health and metrics server listening") resolve(String(rec.url));
      if (rec.msg === "started") clearTimeout(timer);
    });
    child.once("exit", (code) => reject(new Error(`sidecar exited ${code}:\n${stderr}`)));
  });
  // Wait for readiness through the probe, as a kubelet would.
  for (let i = 0; i < 300; i++) {
    const r = await fetch(`${httpUrl}/readyz`).catch(() => undefined);
    if (r?.status === 200) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  caller = await connectNatsBus({ servers: nats.url, onError: () => {} });
}, 60_000);

afterAll(async () => {
  child?.kill("SIGKILL");
  await caller?.close();
  await nats?.dispose();
  rmSync(root, { recursive: true, force: true });
});

describe("astrid-sidecar process", () => {
  it("serves a tool call over NATS and counts it in /metrics", async () => {
    const token = mintToken(
      {
        sub: "user:p",
        res: ["tool:read_file"],
        perm: ["execute"],
        exp: Math.floor(Date.now() / 1000) + 60,
      },
      issuer,
    );
    const wire = encode(
      "tool.execute.request",
      { callId: "c1", tool: "read_file", arguments: { path: "cwd://README.md" }, token },
      { session: "s1", principal: "user:p", capsule: "caller" },
      { timeoutMs: 5000 },
    );
    const reply = decode(
      (await caller.request("tool.v1.execute.read_file", wire, { timeoutMs: 5000 })).data,
      {
        checkDeadline: false,
      },
    );
    expect(reply.body).toMatchObject({
      content: [{ type: "text", text: "from the process test" }],
    });
    const metrics = await (await fetch(`${httpUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /astrid_sidecar_calls_total\{capsule="wasm-tools",kind="tool",outcome="ok"\} 1/,
    );
    expect(lines.every((l) => l.capsule === "wasm-tools")).toBe(true);
  });

  it("drains on SIGTERM, exits 0, and leaves a chain that verifies", async () => {
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    const v = await verifyChain(path.join(root, "audit"), new AuditKeyring([["proc", privateKey]]));
    expect(v.ok).toBe(true);
    expect(lines.some((l) => l.msg === "drained")).toBe(true);
  });

  it("exits 2 naming the field on bad configuration", async () => {
    const r = await run(process.execPath, ["--import", "tsx", MAIN, "--mode", "fast"]).catch(
      (e) => e,
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'mode: expected one of "safe", "guided", "autonomous", "yolo", got "fast"',
    );
  });
});
