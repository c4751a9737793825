/**
 * The react orchestrator end to end, through the real session runtime: each capsule under its
 * own sidecar (five layers, audit chain) on the session's bus. The model is the replay capsule
 * playing test/fixtures/react/transcript.jsonl (a read_file call, then an answer); the tool is
 * served by the react-tools fixture, which describes itself so the orchestrator offers it.
 */
import { generateKeyPairSync } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AuditKeyring, verifyChain } from "../core/audit/index.js";
import { loadManifest } from "../core/manifest/index.js";
import type { BudgetLimitsInput } from "../core/security/budget/limits.js";
import { generateIssuerKey, TrustedKeys } from "../core/security/tokens/keys.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../core/security/tokens/verifier.js";
import {
  type ApprovalPrompt,
  type SessionEventBody,
  SessionRuntime,
} from "../kernel/daemon/session-runtime.js";

const CAPSULES = [
  ["react", path.resolve("capsules/react")],
  ["replay", path.resolve("capsules/replay")],
  ["react-tools", path.resolve("test/fixtures/react/react-tools")],
] as const;
const TRANSCRIPT = path.resolve("test/fixtures/react/transcript.jsonl");
const identity = { key: generateKeyPairSync("ed25519").privateKey, keyId: "kernel" };
const issuer = generateIssuerKey();

let root: string | undefined;
let runtime: SessionRuntime | undefined;

afterEach(async () => {
  await runtime?.close();
  runtime = undefined;
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
});

async function startSession(budget?: BudgetLimitsInput): Promise<{ root: string }> {
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-react-"));
  mkdirSync(path.join(root, ".astrid", "replay"), { recursive: true });
  copyFileSync(TRANSCRIPT, path.join(root, ".astrid", "replay", "transcript.jsonl"));
  writeFileSync(path.join(root, "notes.md"), "Launch: Friday.\n");
  const capsules = await Promise.all(
    CAPSULES.map(async ([, dir]) => ({ dir, manifest: await loadManifest(dir) })),
  );
  runtime = await SessionRuntime.start({
    session: "s-react",
    principal: "user:test",
    sessionDir: path.join(root, "sessions", "s-react"),
    workspace: root,
    home: root,
    mode: "guided",
    yes: false,
    capsules,
    bindings: { react: { "astrid.llm": "replay" } },
    orchestrator: "react",
    identity,
    issuer,
    tokens: new TokenVerifier({
      keys: new TrustedKeys([issuer.publicKey]),
      revocations: new MemoryRevocationSet(),
    }),
    ...(budget ? { budget } : {}),
    env: {},
    extraConfig: { tool_capsules: "react-tools" },
    approvalTimeoutMs: 5000,
    logger: () => {},
  });
  return { root };
}

async function verifyAudit(dir: string): Promise<void> {
  const keyring = new AuditKeyring([["kernel", identity.key]]);
  for (const [name] of CAPSULES) {
    const v = await verifyChain(path.join(dir, "sessions", "s-react", "audit", name), keyring);
    expect(v.ok, name).toBe(true);
  }
}

describe("react orchestrator in a session", () => {
  it("calls the model, runs the tool it asks for, and answers with the replayed text", async () => {
    const { root: dir } = await startSession();
    const events: SessionEventBody[] = [];
    const asked: ApprovalPrompt[] = [];
    const res = await runtime!.prompt(
      "When is the launch?",
      { timeoutMs: 30_000 },
      {
        onEvent: (e) => events.push(e),
        onApproval: async (a) => {
          asked.push(a);
          return "allow_once";
        },
      },
    );
    expect(res).toEqual({
      text: "The notes say the launch is on Friday.",
      stopReason: "done",
      // Replays cost nothing, but their recorded token counts are summed.
      usage: { inputTokens: 1000, outputTokens: 42, costMicroUsd: 0 },
    });
    // Events are published asynchronously; by the time the reply is in they have all been
    // delivered on the embedded bus, in order.
    expect(events.filter((e) => e.type !== "usage")).toEqual([
      { type: "status", text: "I will read the notes." },
      {
        type: "tool_call",
        callId: "toolu_01",
        tool: "read_file",
        arguments: { path: "cwd://notes.md" },
      },
      { type: "tool_result", callId: "toolu_01", isError: false, summary: "Launch: Friday.\n" },
      { type: "delta", seq: 0, text: "The notes say the launch is on Friday." },
    ]);
    expect(events.filter((e) => e.type === "usage").at(-1)).toEqual({
      type: "usage",
      usage: { inputTokens: 1000, outputTokens: 42, costMicroUsd: 0 },
    });
    // Guided mode: the tool call waited for the person (layer 5 of the tool's sidecar).
    expect(asked).toMatchObject([{ kind: "tool", target: "read_file" }]);
    await runtime!.close();
    runtime = undefined;
    await verifyAudit(dir);
  });

  it("reports a tool the person refuses to the model and ends with stopReason denied", async () => {
    const { root: dir } = await startSession();
    const events: SessionEventBody[] = [];
    // No approver: the pending approval is denied, the model still gets its second turn.
    const res = await runtime!.prompt(
      "When is the launch?",
      { timeoutMs: 30_000 },
      { onEvent: (e) => events.push(e) },
    );
    expect(res).toMatchObject({
      text: "The notes say the launch is on Friday.",
      stopReason: "denied",
    });
    expect(events.filter((e) => e.type === "tool_result" || e.type === "status")).toEqual([
      { type: "status", text: "I will read the notes." },
      { type: "status", text: "denied: read_file: approval: denied by no-approver" },
      {
        type: "tool_result",
        callId: "toolu_01",
        isError: true,
        summary: "denied: approval: denied by no-approver",
      },
    ]);
    await runtime!.close();
    runtime = undefined;
    await verifyAudit(dir);
  });

  it("stops cleanly with stopReason budget when the session cannot afford the next model call", async () => {
    // Each model call reserves its worst case (500 tokens) first: the first call settles at 430,
    // so the second (430 + 500 > 900) is refused by the provider's sidecar before it runs.
    const { root: dir } = await startSession({
      tokens: { perCall: 500, session: 900 },
      microUsd: { perCall: 1000, session: 1_000_000 },
    });
    const events: SessionEventBody[] = [];
    const res = await runtime!.prompt(
      "When is the launch?",
      { timeoutMs: 30_000 },
      { onEvent: (e) => events.push(e), onApproval: async () => "allow_once" },
    );
    expect(res).toEqual({
      text: "stopped: the session budget is spent",
      stopReason: "budget",
      usage: { inputTokens: 400, outputTokens: 30, costMicroUsd: 0 },
    });
    // The tool of the first turn did run; only the model call after it was refused.
    expect(events.filter((e) => e.type === "tool_result")).toEqual([
      { type: "tool_result", callId: "toolu_01", isError: false, summary: "Launch: Friday.\n" },
    ]);
    await runtime!.close();
    runtime = undefined;
    await verifyAudit(dir);
  });
});
