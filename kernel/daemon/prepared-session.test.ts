import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadManifest } from "../../core/manifest/index.js";
import { generateIssuerKey, TrustedKeys } from "../../core/security/tokens/keys.js";
import { MemoryRevocationSet } from "../../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../../core/security/tokens/verifier.js";
import { type Prepared, PreparedSession } from "./prepared-session.js";
import { type InstalledCapsule, SessionRuntime } from "./session-runtime.js";

const FIXTURES = path.resolve("test/fixtures/capsules");
const identity = { key: generateKeyPairSync("ed25519").privateKey, keyId: "kernel" };
const issuer = generateIssuerKey();
const tokens = new TokenVerifier({
  keys: new TrustedKeys([issuer.publicKey]),
  revocations: new MemoryRevocationSet(),
});
let root: string;
let capsules: InstalledCapsule[];

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-prepared-"));
  capsules = await Promise.all(
    ["echo-orchestrator", "wasm-tools"].map(async (n) => ({
      dir: path.join(FIXTURES, n),
      manifest: await loadManifest(path.join(FIXTURES, n)),
    })),
  );
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A real session, as the daemon prepares one: its own id, bus, audit chains. */
async function startSession(session: string, fingerprint: string): Promise<Prepared> {
  const runtime = await SessionRuntime.start({
    session,
    principal: "user:test",
    sessionDir: path.join(root, "sessions", session),
    workspace: root,
    home: root,
    mode: "guided",
    yes: false,
    capsules,
    bindings: {},
    orchestrator: "echo-orchestrator",
    identity,
    issuer,
    tokens,
    env: {},
    approvalTimeoutMs: 5000,
    logger: () => {},
  });
  return { session, fingerprint, runtime };
}

function pool() {
  const discarded: string[] = [];
  const log: string[] = [];
  const p = new PreparedSession(
    async (s) => {
      discarded.push(s.session);
      await s.runtime.close();
    },
    (l) => log.push(l),
  );
  return { p, discarded, log };
}

const ask = (r: SessionRuntime) => r.prompt("hello", { timeoutMs: 5000 }, { onEvent: () => {} });

describe("PreparedSession", () => {
  it("hands a prepared session to one prompt with the same fingerprint, and only once", async () => {
    const { p, discarded } = pool();
    let starts = 0;
    const start = () => {
      starts++;
      return startSession("s-a", "fp-1");
    };
    p.prepare("fp-1", start);
    p.prepare("fp-1", start);
    expect(starts).toBe(1);
    // Taken while still starting: the prompt waits for it rather than starting another.
    const got = await p.take("fp-1");
    expect(got?.session).toBe("s-a");
    expect((await ask(got!.runtime)).text).toBe("echo: hello (llm bound to wasm-tools)");
    expect(await p.take("fp-1")).toBeUndefined();
    expect(discarded).toEqual([]);
    await got!.runtime.close();
  });

  it("discards a session prepared for other inputs instead of handing it out", async () => {
    const { p, discarded } = pool();
    p.prepare("fp-1", () => startSession("s-b", "fp-1"));
    expect(await p.take("fp-2")).toBeUndefined();
    // Nothing is left to take, not even for the fingerprint it was made for.
    expect(await p.take("fp-1")).toBeUndefined();
    await p.close();
    expect(discarded).toEqual(["s-b"]);
  });

  it("discards one that started on other inputs than it was asked for", async () => {
    const { p, discarded } = pool();
    // The store changed between the fingerprint and the load.
    p.prepare("fp-1", () => startSession("s-c", "fp-changed"));
    expect(await p.take("fp-1")).toBeUndefined();
    await p.close();
    expect(discarded).toEqual(["s-c"]);
  });

  it("replaces a prepared session when other inputs are prepared, and discards all on close", async () => {
    const { p, discarded } = pool();
    p.prepare("fp-1", () => startSession("s-d", "fp-1"));
    p.prepare("fp-2", () => startSession("s-e", "fp-2"));
    await p.close();
    expect(discarded.sort()).toEqual(["s-d", "s-e"]);
    // Closed: nothing more is prepared.
    p.prepare("fp-3", () => startSession("s-f", "fp-3"));
    expect(await p.take("fp-3")).toBeUndefined();
    expect(existsSync(path.join(root, "sessions", "s-f"))).toBe(false);
  });

  it("a start that fails leaves nothing to take and says why", async () => {
    const { p, log } = pool();
    p.prepare("fp-1", async () => {
      throw new Error("orchestrator missing");
    });
    expect(await p.take("fp-1")).toBeUndefined();
    expect(log).toEqual([
      "preparing the next session failed (it starts on demand): orchestrator missing",
    ]);
  });
});
