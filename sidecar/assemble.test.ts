/**
 * assembleSidecar passes the audit durability through to the chain: "always" unless asked, and
 * a sidecar with sync "interval" serves calls whose decisions end up sealed and verifiable.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AuditKeyring, verifyChain } from "../core/audit/index.js";
import { EmbeddedBus } from "../core/bus/embedded.js";
import { loadManifest } from "../core/manifest/index.js";
import { decode, encode } from "../core/protocol/envelope.js";
import { generateIssuerKey, TrustedKeys } from "../core/security/tokens/keys.js";
import { mintToken } from "../core/security/tokens/mint.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../core/security/tokens/verifier.js";
import { type AssembleOptions, assembleSidecar } from "./assemble.js";

const WASM_DIR = path.resolve(import.meta.dirname, "../test/fixtures/capsules/wasm-tools");
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function start(auditSync?: AssembleOptions["auditSync"]) {
  const root = await mkdtemp(path.join(tmpdir(), "astrid-assemble-"));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  await writeFile(path.join(root, "README.md"), "hello");
  const issuer = generateIssuerKey();
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const bus = new EmbeddedBus();
  cleanups.push(() => bus.close());
  const auditDir = path.join(root, "audit");
  const assembled = await assembleSidecar({
    packageDir: WASM_DIR,
    manifest: await loadManifest(WASM_DIR),
    bus,
    auditDir,
    identity: { key: privateKey, keyId: "assemble-test" },
    tokens: new TokenVerifier({
      keys: new TrustedKeys([issuer.publicKey]),
      revocations: new MemoryRevocationSet(),
    }),
    requireCallerToken: true,
    mode: "autonomous",
    workspace: root,
    home: root,
    stateDir: path.join(root, "state"),
    logger: () => {},
    ...(auditSync ? { auditSync } : {}),
  });
  cleanups.push(() => assembled.close());
  const token = mintToken(
    {
      sub: "user:alice",
      res: ["tool:*"],
      perm: ["execute"],
      exp: Math.floor(Date.now() / 1000) + 600,
    },
    issuer,
  );
  const readme = async () => {
    const wire = encode(
      "tool.execute.request",
      { callId: "c", tool: "read_file", arguments: { path: "cwd://README.md" }, token },
      { session: "s", principal: "user:alice", capsule: "caller" },
      { timeoutMs: 10_000 },
    );
    const reply = await bus.request("tool.v1.execute.read_file", wire, { timeoutMs: 10_000 });
    return decode(reply.data, { checkDeadline: false });
  };
  return { assembled, auditDir, readme, keyring: new AuditKeyring([["assemble-test", publicKey]]) };
}

describe("assembleSidecar: audit durability", () => {
  it('keeps sync "always" unless asked', async () => {
    const { assembled } = await start();
    expect(assembled.audit.sync).toBe("always");
  });

  it('opens the chain with sync "interval"; its decisions are sealed by close', async () => {
    const { assembled, auditDir, readme, keyring } = await start({
      sync: "interval",
      intervalMs: 250,
    });
    expect(assembled.audit.sync).toBe("interval");
    expect(assembled.audit.syncIntervalMs).toBe(250);
    const reply = await readme();
    expect(reply.kind).toBe("tool.result");
    await assembled.close();
    const v = await verifyChain(auditDir, keyring);
    expect(v.ok && v.entries).toBeGreaterThanOrEqual(2);
  });
});
