/**
 * Revocation on a real nats-server in operator mode (full nats-based resolver): after
 * revoke() the user can no longer connect and its open connection is dropped, while other
 * users of the account keep working; earlier revocations are kept.
 */
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NatsAccountRevoker, operatorKey } from "./account-revoker.js";
import { LazyAccountRevoker } from "./config.js";
import { type OperatorModeNats, startOperatorModeNats } from "./test-support.js";
import { accountSigner, issueNatsUser } from "./user-jwt.js";

let nats: OperatorModeNats;
let revoker: NatsAccountRevoker;
const conns: NatsConnection[] = [];
const ALL = { publish: { allow: [">"] }, subscribe: { allow: [">"] } };

beforeAll(async () => {
  nats = await startOperatorModeNats();
  revoker = await NatsAccountRevoker.connect({
    servers: nats.server.url,
    systemCreds: nats.systemCreds,
    operatorSeed: nats.seedOf(nats.operatorSigningKey),
    account: nats.account.getPublicKey(),
  });
}, 30_000);

afterAll(async () => {
  for (const c of conns) await c.close().catch(() => {});
  await revoker?.close();
  await nats?.server.dispose();
});

async function connectAs(creds: string): Promise<NatsConnection> {
  const nc = await connect({
    servers: nats.server.url,
    authenticator: credsAuthenticator(new TextEncoder().encode(creds)),
    maxReconnectAttempts: 0,
  });
  conns.push(nc);
  return nc;
}

describe("NatsAccountRevoker", () => {
  it("refuses a seed that is not an operator seed, and a key that is not a user key", () => {
    expect(() => operatorKey(nats.seedOf(nats.account))).toThrow(
      "NATS operator signing key: expected an operator nkey seed (SO…)",
    );
    expect(() => revoker.revoke(nats.account.getPublicKey())).toThrow(
      `NATS user "${nats.account.getPublicKey()}": expected a user public key (U…)`,
    );
  });

  it("cuts a revoked user off and keeps the others (and earlier revocations)", async () => {
    const signer = accountSigner(nats.account.getPublicKey(), nats.seedOf(nats.accountSigningKey));
    const first = await issueNatsUser(signer, "first", ALL);
    const second = await issueNatsUser(signer, "second", ALL);
    const kept = await issueNatsUser(signer, "kept", ALL);
    const open = await connectAs(first.creds);
    const closed = open.closed();

    await revoker.revoke(first.publicKey);
    // The server drops the revoked user's open connection and refuses a new one.
    await closed;
    await expect(connectAs(first.creds)).rejects.toThrow(/Authorization Violation/i);

    // A second revocation in the same second: the first one must survive the rewrite.
    await revoker.revoke(second.publicKey);
    await expect(connectAs(second.creds)).rejects.toThrow(/Authorization Violation/i);
    await expect(connectAs(first.creds)).rejects.toThrow(/Authorization Violation/i);

    const nc = await connectAs(kept.creds);
    await nc.flush();
    // Idempotent: revoking again is not an error.
    await revoker.revoke(first.publicKey);
  }, 30_000);

  it("connects on first use (LazyAccountRevoker), and retries a failed connect", async () => {
    const opts = {
      systemCreds: nats.systemCreds,
      operatorSeed: nats.seedOf(nats.operatorSigningKey),
      account: nats.account.getPublicKey(),
    };
    const signer = accountSigner(nats.account.getPublicKey(), nats.seedOf(nats.accountSigningKey));
    const user = await issueNatsUser(signer, "lazy", ALL);
    const unreachable = new LazyAccountRevoker({ ...opts, servers: "nats://127.0.0.1:1" });
    await expect(unreachable.revoke(user.publicKey)).rejects.toThrow();
    await unreachable.close();
    const lazy = new LazyAccountRevoker({ ...opts, servers: nats.server.url });
    await lazy.revoke(user.publicKey);
    await expect(connectAs(user.creds)).rejects.toThrow(/Authorization Violation/i);
    await lazy.close();
  }, 30_000);
});
