/**
 * The distribution working together in one session: react → cache → router → two providers,
 * with the fs and shell tools. The model (two copies of the replay capsule, so the router has a
 * choice) plays a recorded multi-step task: read a file, run a command, write the result, answer.
 * The second identical run is answered by the cache (the providers see no request); safe mode
 * asks a person before each tool call, autonomous mode asks nobody; every audit chain verifies.
 */
import { generateKeyPairSync } from "node:crypto";
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AuditKeyring, verifyChain } from "../core/audit/index.js";
import { loadManifest } from "../core/manifest/index.js";
import type { SecurityMode } from "../core/security/modes/policy-table.js";
import { generateIssuerKey, TrustedKeys } from "../core/security/tokens/keys.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../core/security/tokens/verifier.js";
import { type ApprovalPrompt, SessionRuntime } from "../kernel/daemon/session-runtime.js";

const identity = { key: generateKeyPairSync("ed25519").privateKey, keyId: "kernel" };
const issuer = generateIssuerKey();
const usage = { inputTokens: 100, outputTokens: 10 };
const step = (content: unknown[], stopReason: string) =>
  JSON.stringify({ provider: "anthropic", model: "m", content, stopReason, usage });
const TRANSCRIPT = [
  step(
    [{ type: "tool_use", id: "t1", name: "read_file", input: { path: "data.txt" } }],
    "tool_use",
  ),
  step(
    [
      {
        type: "tool_use",
        id: "t2",
        name: "run",
        input: { command: "wc", args: ["-l", "data.txt"] },
      },
    ],
    "tool_use",
  ),
  step(
    [
      {
        type: "tool_use",
        id: "t3",
        name: "write_file",
        input: { path: "result.txt", text: "3 lines" },
      },
    ],
    "tool_use",
  ),
  step([{ type: "text", text: "data.txt has 3 lines; I wrote that to result.txt." }], "end_turn"),
].join("\n");

let root: string | undefined;
let runtime: SessionRuntime | undefined;

afterEach(async () => {
  await runtime?.close();
  runtime = undefined;
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
});

/** A copy of the replay capsule under another name: a second provider for the router. */
function replayCopy(dir: string, name: string): string {
  const out = path.join(dir, name);
  cpSync(path.resolve("capsules/replay"), out, { recursive: true });
  const toml = readFileSync(path.join(out, "Capsule.toml"), "utf8")
    .replace('name = "replay"', `name = "${name}"`)
    .replaceAll("llm.v1.chat.replay", `llm.v1.chat.${name}`);
  writeFileSync(path.join(out, "Capsule.toml"), toml);
  return out;
}

async function start(mode: SecurityMode) {
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-scenario-"));
  const ws = path.join(root, "ws");
  mkdirSync(path.join(ws, ".astrid", "replay"), { recursive: true });
  writeFileSync(path.join(ws, ".astrid", "replay", "transcript.jsonl"), `${TRANSCRIPT}\n`);
  writeFileSync(path.join(ws, "data.txt"), "one\ntwo\nthree\n");
  const dirs = [
    path.resolve("capsules/react"),
    path.resolve("capsules/cache"),
    path.resolve("capsules/router"),
    path.resolve("capsules/fs"),
    path.resolve("capsules/shell"),
    replayCopy(root, "replay-a"),
    replayCopy(root, "replay-b"),
  ];
  const capsules = await Promise.all(
    dirs.map(async (dir) => ({ dir, manifest: await loadManifest(dir) })),
  );
  runtime = await SessionRuntime.start({
    session: "s-1",
    principal: "user:test",
    sessionDir: path.join(root, "sessions", "s-1"),
    workspace: ws,
    home: root,
    mode,
    yes: false,
    capsules,
    // The whole interposition is this wiring: no capsule knows about the others.
    bindings: {
      react: { "astrid.llm": "cache" },
      cache: { "astrid.llm": "router" },
      router: { "astrid.llm": "replay-a" },
    },
    orchestrator: "react",
    identity,
    issuer,
    tokens: new TokenVerifier({
      keys: new TrustedKeys([issuer.publicKey]),
      revocations: new MemoryRevocationSet(),
    }),
    // No CACHE_ALL: react's requests are cached because it sends temperature 0.
    env: { ROUTER_PROVIDERS: "replay-a,replay-b" },
    extraConfig: { tool_capsules: "fs,shell" },
    approvalTimeoutMs: 5000,
    logger: () => {},
  });
  return { ws, root, names: capsules.map((c) => c.manifest.package.name) };
}

/** Model requests a provider's sidecar served, from its audit chain. */
function providerCalls(dir: string, name: string): number {
  const audit = path.join(dir, "sessions", "s-1", "audit", name);
  let n = 0;
  for (const f of readdirSync(audit).filter((f) => f.endsWith(".jsonl"))) {
    for (const line of readFileSync(path.join(audit, f), "utf8").split("\n")) {
      if (line.includes('"action":"llm.done"')) n++;
    }
  }
  return n;
}

async function verifyAll(dir: string, names: string[]) {
  const keyring = new AuditKeyring([["kernel", identity.key]]);
  for (const name of names) {
    const v = await verifyChain(path.join(dir, "sessions", "s-1", "audit", name), keyring);
    expect(v.ok, `${name}: ${v.ok ? "" : v.error.message}`).toBe(true);
  }
}

describe("the distribution in one session", () => {
  it("completes a multi-step task, answers the repeat from the cache, and asks nobody when autonomous", async () => {
    const { ws, root: dir, names } = await start("autonomous");
    const asked: ApprovalPrompt[] = [];
    const h = {
      onEvent: () => {},
      onApproval: async (a: ApprovalPrompt) => {
        asked.push(a);
        return "deny" as const;
      },
    };
    const first = await runtime!.prompt("Count the lines of data.txt", { timeoutMs: 60_000 }, h);
    expect(first.text).toBe("data.txt has 3 lines; I wrote that to result.txt.");
    expect(first.stopReason).toBe("done");
    expect(readFileSync(path.join(ws, "result.txt"), "utf8")).toBe("3 lines");
    const before = providerCalls(dir, "replay-a") + providerCalls(dir, "replay-b");
    expect(before).toBe(4);
    rmSync(path.join(ws, "result.txt"));
    const second = await runtime!.prompt("Count the lines of data.txt", { timeoutMs: 60_000 }, h);
    expect(second.text).toBe(first.text);
    // Every model step was a cache hit: the providers saw no new request.
    expect(providerCalls(dir, "replay-a") + providerCalls(dir, "replay-b")).toBe(before);
    expect(readFileSync(path.join(ws, "result.txt"), "utf8")).toBe("3 lines");
    expect(asked).toEqual([]);
    await runtime!.close();
    runtime = undefined;
    await verifyAll(dir, names);
  });

  it("asks a person before the tool calls in safe mode", async () => {
    const { ws, root: dir, names } = await start("safe");
    const asked: string[] = [];
    const res = await runtime!.prompt(
      "Count the lines of data.txt",
      { timeoutMs: 60_000 },
      {
        onEvent: () => {},
        onApproval: async (a) => {
          asked.push(`${a.kind} ${a.target}`);
          return "allow_once";
        },
      },
    );
    expect(res.text).toBe("data.txt has 3 lines; I wrote that to result.txt.");
    expect(asked).toEqual(
      expect.arrayContaining(["tool read_file", "tool run", "tool write_file"]),
    );
    expect(readFileSync(path.join(ws, "result.txt"), "utf8")).toBe("3 lines");
    await runtime!.close();
    runtime = undefined;
    await verifyAll(dir, names);
  });
});
