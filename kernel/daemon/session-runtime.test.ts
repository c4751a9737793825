import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditKeyring, verifyChain } from "../../core/audit/index.js";
import { loadManifest } from "../../core/manifest/index.js";
import { generateIssuerKey, TrustedKeys } from "../../core/security/tokens/keys.js";
import { MemoryRevocationSet } from "../../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../../core/security/tokens/verifier.js";
import { type ApprovalPrompt, SessionRuntime, startLevels } from "./session-runtime.js";

const FIXTURES = path.resolve("test/fixtures/capsules");
const identity = { key: generateKeyPairSync("ed25519").privateKey, keyId: "kernel" };
const issuer = generateIssuerKey();
let root: string;
let runtime: SessionRuntime;
const revocations = new MemoryRevocationSet();

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-session-"));
  const capsules = await Promise.all(
    ["echo-orchestrator", "wasm-tools"].map(async (n) => ({
      dir: path.join(FIXTURES, n),
      manifest: await loadManifest(path.join(FIXTURES, n)),
    })),
  );
  runtime = await SessionRuntime.start({
    session: "s-1",
    principal: "user:test",
    sessionDir: path.join(root, "sessions", "s-1"),
    workspace: root,
    home: root,
    mode: "guided",
    yes: false,
    capsules,
    bindings: {},
    orchestrator: "echo-orchestrator",
    identity,
    issuer,
    tokens: new TokenVerifier({
      keys: new TrustedKeys([issuer.publicKey]),
      revocations,
    }),
    env: {},
    approvalTimeoutMs: 5000,
    logger: () => {},
  });
});

afterAll(async () => {
  await runtime?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("SessionRuntime", () => {
  it("starts the installed capsules in dependency order, exporters first", () => {
    expect(runtime.order).toEqual(["wasm-tools", "echo-orchestrator"]);
  });

  it("routes a prompt to the orchestrator with the session's grant and returns its answer", async () => {
    const res = await runtime.prompt("hello", { timeoutMs: 5000 }, { onEvent: () => {} });
    expect(res).toEqual({
      text: "echo: hello (llm bound to wasm-tools)",
      stopReason: "done",
      usage: { inputTokens: 0, outputTokens: 0 },
    });
  });

  it("hands the session's approval requests to the person and applies the answer", async () => {
    const asked: ApprovalPrompt[] = [];
    const yes = await runtime.prompt(
      "ask:deploy",
      { timeoutMs: 5000 },
      {
        onEvent: () => {},
        onApproval: async (a) => {
          asked.push(a);
          return "allow_once";
        },
      },
    );
    expect(yes.text).toBe("echo: ask:deploy (llm bound to wasm-tools, approved once)");
    expect(asked).toMatchObject([{ capsule: "echo-orchestrator", kind: "tool", target: "deploy" }]);
    const no = await runtime.prompt(
      "ask:deploy",
      { timeoutMs: 5000 },
      {
        onEvent: () => {},
        onApproval: async () => "deny",
      },
    );
    expect(no.text).toMatch(/refused \(denied by user:test\)\)$/);
    const nobody = await runtime.prompt("ask:deploy", { timeoutMs: 5000 }, { onEvent: () => {} });
    expect(nobody.text).toMatch(/refused \(denied by no-approver\)\)$/);
  });

  it("an allow-always grant answers later asks until its token is revoked", async () => {
    const asked: string[] = [];
    const handlers = (answer: "allow_always" | "deny") => ({
      onEvent: () => {},
      onApproval: async (a: ApprovalPrompt) => {
        asked.push(a.target);
        return answer;
      },
    });
    await runtime.prompt("ask:publish", { timeoutMs: 5000 }, handlers("allow_always"));
    expect(asked).toEqual(["publish"]);
    const again = await runtime.prompt("ask:publish", { timeoutMs: 5000 }, handlers("deny"));
    expect(asked).toEqual(["publish"]);
    expect(again.text).toMatch(/approved once\)$/);
    // Revoke the minted token: the grant must end with it (checked in full on every use).
    const grants = JSON.parse(
      readFileSync(
        path.join(root, "sessions", "s-1", "state", "echo-orchestrator", "grants.json"),
        "utf8",
      ),
    ) as { always: { token: string }[] };
    const claims = JSON.parse(
      Buffer.from(grants.always[0]!.token.split(".")[1]!, "base64url").toString(),
    );
    await revocations.revoke(claims.jti, claims.exp);
    const revoked = await runtime.prompt("ask:publish", { timeoutMs: 5000 }, handlers("deny"));
    expect(asked).toEqual(["publish", "publish"]);
    expect(revoked.text).toMatch(/refused \(denied by user:test\)\)$/);
  });

  it("lets the orchestrator call the bound model through the host and stream events", async () => {
    const events: unknown[] = [];
    const res = await runtime.prompt(
      "llm:hi",
      { timeoutMs: 5000 },
      { onEvent: (e) => events.push(e) },
    );
    expect(res).toEqual({
      text: "you said 1 message(s)",
      stopReason: "done",
      usage: { inputTokens: 10, outputTokens: 5, costMicroUsd: 10000 },
    });
    expect(events).toEqual([{ type: "status", text: "asking wasm-tools" }]);
  });

  it("passes a callee's budget refusal to the guest with its code", async () => {
    // wasm-tools allows 0.03 USD per session at 0.01 a call: two more calls spend it.
    await runtime.prompt("llm:a", { timeoutMs: 5000 }, { onEvent: () => {} });
    await runtime.prompt("llm:b", { timeoutMs: 5000 }, { onEvent: () => {} });
    const res = await runtime.prompt("llm:c", { timeoutMs: 5000 }, { onEvent: () => {} });
    expect(res.text).toMatch(/^model refused: budget: budget: session has 0 µUSD left/);
  });

  it("keeps one audit chain per capsule under the session, and they verify", async () => {
    await runtime.close();
    const keyring = new AuditKeyring([["kernel", identity.key]]);
    for (const c of ["echo-orchestrator", "wasm-tools"]) {
      const v = await verifyChain(path.join(root, "sessions", "s-1", "audit", c), keyring);
      expect(v.ok, c).toBe(true);
    }
  });
});

describe("startLevels", () => {
  const bind = (importer: string, exporter: string) => ({
    importer,
    interface: "astrid.llm",
    range: "^0.1.0",
    exporter,
    version: "0.1.0",
  });

  it("puts every exporter in a level before its importers, and the rest together", () => {
    expect(
      startLevels({
        order: ["anthropic", "fs", "cache", "react"],
        bindings: [bind("cache", "anthropic"), bind("react", "cache")],
      }),
    ).toEqual([["anthropic", "fs"], ["cache"], ["react"]]);
    expect(startLevels({ order: ["a", "b"], bindings: [] })).toEqual([["a", "b"]]);
  });
});
