import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsServerHandle, startNatsServer } from "../../../../test/harness/nats-server.js";
import { generateIssuerKey, TrustedKeys } from "../keys.js";
import { mintToken } from "../mint.js";
import { type TokenRequest, TokenVerifier } from "../verifier.js";
import { KvRevocationSet } from "./kv-revocation-set.js";

let server: NatsServerHandle;
const conns: NatsConnection[] = [];
const sets: KvRevocationSet[] = [];

async function openSet(
  opts: Parameters<typeof KvRevocationSet.open>[1] = {},
): Promise<KvRevocationSet> {
  const nc = await connect({
    servers: server.url,
    reconnectTimeWait: 50,
    maxReconnectAttempts: -1,
  });
  conns.push(nc);
  const s = await KvRevocationSet.open(nc, opts);
  sets.push(s);
  return s;
}

async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`gave up waiting for ${what}`);
}

beforeAll(async () => {
  server = await startNatsServer();
});
afterAll(async () => {
  await Promise.all(sets.map((s) => s.close()));
  await Promise.all(conns.map((c) => c.close()));
  await server?.dispose();
});

const issuer = generateIssuerKey();
const keys = new TrustedKeys([issuer.publicKey]);
const req: TokenRequest = {
  principal: "alice",
  resource: "tool:git/status",
  permission: "execute",
};
const exp = () => Math.floor(Date.now() / 1000) + 600;
const mint = (once?: true) =>
  mintToken(
    { sub: "alice", res: ["tool:git/*"], perm: ["execute"], exp: exp(), ...(once ? { once } : {}) },
    issuer,
  );

describe("KvRevocationSet", () => {
  it("propagates a revocation to another sidecar's mirror and its cached verifier", async () => {
    const a = await openSet({ bucket: "rev-a", usedBucket: "used-a" });
    const b = await openSet({ bucket: "rev-a", usedBucket: "used-a" });
    const verifierB = new TokenVerifier({ keys, revocations: b });
    const token = mint();
    expect((await verifierB.verify(token, req)).allowed).toBe(true);
    const jti = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()).jti as string;
    await a.revoke(jti, exp());
    await until(() => b.has(jti), "b to see the revocation");
    expect(await verifierB.verify(token, req)).toMatchObject({
      allowed: false,
      reason: `token ${jti} is revoked`,
    });
  });

  it("loads revocations that exist before it opens", async () => {
    const a = await openSet({ bucket: "rev-b", usedBucket: "used-b" });
    await a.revoke("early-1", exp());
    await a.revoke("early-2", exp());
    const b = await openSet({ bucket: "rev-b", usedBucket: "used-b" });
    expect(b.has("early-1") && b.has("early-2")).toBe(true);
  });

  it("lets exactly one of two verifiers sharing the KV redeem a single-use token", async () => {
    const a = await openSet({ bucket: "rev-c", usedBucket: "used-c" });
    const b = await openSet({ bucket: "rev-c", usedBucket: "used-c" });
    const va = new TokenVerifier({ keys, revocations: a });
    const vb = new TokenVerifier({ keys, revocations: b });
    const token = mint(true);
    const results = await Promise.all([va.verify(token, req), vb.verify(token, req)]);
    expect(results.filter((d) => d.allowed)).toHaveLength(1);
    const denied = results.find((d) => !d.allowed);
    expect(denied).toMatchObject({
      reason: expect.stringMatching(/^single-use token \S+ already used$/),
    });
    expect((await va.verify(token, req)).allowed).toBe(false);
  });

  it("refuses a single-use token that outlives the used-set retention", async () => {
    const a = await openSet({ bucket: "rev-d", usedBucket: "used-d", usedRetentionMs: 60_000 });
    const v = new TokenVerifier({ keys, revocations: a });
    expect(await v.verify(mint(true), req)).toMatchObject({
      allowed: false,
      reason:
        "single-use ledger unavailable: single-use token outlives the used-set retention of 60000 ms",
    });
  });

  it("fails closed while NATS is down and recovers, revocations made meanwhile included", async () => {
    const a = await openSet({ bucket: "rev-e", usedBucket: "used-e", graceMs: 0 });
    const v = new TokenVerifier({ keys, revocations: a });
    const token = mint();
    expect((await v.verify(token, req)).allowed).toBe(true);

    await server.stop();
    await until(async () => !(await v.verify(token, req)).allowed, "verify to deny");
    expect(await v.verify(token, req)).toMatchObject({
      allowed: false,
      reason: expect.stringMatching(/^revocation list unavailable: NATS disconnected since /),
    });
    expect(await v.verify(mint(true), req)).toMatchObject({ allowed: false });

    await server.start();
    await until(async () => (await v.verify(token, req)).allowed, "verify to allow again");
    const other = await openSet({ bucket: "rev-e", usedBucket: "used-e" });
    const jti = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()).jti as string;
    await other.revoke(jti, exp());
    await until(() => a.has(jti), "the revocation to reach the reconnected mirror");
    expect((await v.verify(token, req)).allowed).toBe(false);
  });
});
