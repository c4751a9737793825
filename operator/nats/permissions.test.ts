/**
 * A capsule's issued user on a real nats-server in operator mode can do what its sidecar does
 * with JetStream — open the revocation list and see revocations, mark single-use tokens, use
 * its own kv bucket — and cannot write the revocation list (which would un-revoke tokens).
 */
import { Kvm } from "@nats-io/kv";
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseManifest } from "../../core/manifest/parse.js";
import { KvRevocationSet } from "../../core/security/tokens/revocation/kv-revocation-set.js";
import { JetStreamKvStore } from "../../sidecar/enforce/kv-jetstream.js";
import { capsuleNatsPermissions, USED_TOKENS_BUCKET } from "./permissions.js";
import { type OperatorModeNats, startOperatorModeNats } from "./test-support.js";
import { accountSigner, issueNatsUser } from "./user-jwt.js";

const MANIFEST = `
[package]
name = "cache"
version = "0.1.0"
description = "cache"

[wasm]
module = "main.js"

[capabilities]
kv = ["cache"]
ipc_subscribe = ["llm.v1.chat.cache"]
ipc_publish = ["llm.v1.chat.*"]
`;

let nats: OperatorModeNats;
const conns: NatsConnection[] = [];

beforeAll(async () => {
  nats = await startOperatorModeNats();
}, 30_000);

afterAll(async () => {
  for (const c of conns) await c.close().catch(() => {});
  await nats?.server.dispose();
});

async function connectAs(creds: string, inboxPrefix?: string): Promise<NatsConnection> {
  const nc = await connect({
    servers: nats.server.url,
    authenticator: credsAuthenticator(new TextEncoder().encode(creds)),
    ...(inboxPrefix ? { inboxPrefix } : {}),
    maxReconnectAttempts: 0,
  });
  conns.push(nc);
  return nc;
}

describe("capsuleNatsPermissions", () => {
  it("is the sidecar's ACL plus its buckets, sorted so equal ACLs give equal lists", () => {
    const perms = capsuleNatsPermissions(parseManifest(MANIFEST), "cache", { taskSession: "s-1" });
    const pub = perms.publish.allow ?? [];
    expect(pub).toContain("llm.v1.chat.*");
    expect(pub).toContain("session.v1.prompt.s-1");
    expect(pub).toContain("$KV.astrid-kv-cache.>");
    expect(pub).toContain(`$KV.${USED_TOKENS_BUCKET}.>`);
    expect(pub).toContain("$JS.API.STREAM.INFO.KV_astrid-revocations");
    expect(pub.filter((s) => s.startsWith("$KV.astrid-revocations"))).toEqual([]);
    expect(pub).toEqual([...pub].sort());
    expect(perms.subscribe.allow).toEqual(
      ["_INBOX.cache.>", "capsule.v1.health.cache", "llm.v1.chat.cache"].sort(),
    );
    const noKv = capsuleNatsPermissions(
      parseManifest(MANIFEST.replace('kv = ["cache"]', "")),
      "cache",
    );
    expect(noKv.publish.allow?.filter((s) => s.includes("astrid-kv-cache"))).toEqual([]);
  });

  it("opens the revocation list, marks tokens used and uses its own kv; cannot revoke or un-revoke", async () => {
    const signer = accountSigner(nats.account.getPublicKey(), nats.seedOf(nats.accountSigningKey));
    const user = await issueNatsUser(
      signer,
      "cache",
      capsuleNatsPermissions(parseManifest(MANIFEST), "cache"),
    );
    // An unrestricted user of the account stands in for the operator that revokes tokens.
    const admin = await issueNatsUser(signer, "admin", {
      publish: { allow: [">"] },
      subscribe: { allow: [">"] },
    });
    const adminNc = await connectAs(admin.creds);
    const adminSet = await KvRevocationSet.open(adminNc);

    const nc = await connectAs(user.creds, "_INBOX.cache");
    const set = await KvRevocationSet.open(nc);
    await adminSet.revoke("jti-1", Math.floor(Date.now() / 1000) + 3600);
    await expect.poll(() => set.has("jti-1"), { timeout: 5000 }).toBe(true);
    expect(await set.markUsed("jti-2", Math.floor(Date.now() / 1000) + 3600)).toBe(true);
    expect(await set.markUsed("jti-2", Math.floor(Date.now() / 1000) + 3600)).toBe(false);

    const kv = await JetStreamKvStore.open(nc, { bucket: "astrid-kv-cache" });
    await kv.set("s", "k", new TextEncoder().encode("v"));
    expect(new TextDecoder().decode((await kv.get("s", "k")) ?? new Uint8Array())).toBe("v");

    const revocations = await new Kvm(nc).open("astrid-revocations");
    await expect(revocations.delete("jti-1")).rejects.toThrow(/Permissions Violation/);
    // Another capsule's bucket is out of reach.
    await expect(new Kvm(nc).create("astrid-kv-other")).rejects.toThrow(/Permissions Violation/);
    await set.close();
    await adminSet.close();
  }, 30_000);
});
