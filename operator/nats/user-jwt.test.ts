/**
 * Users issued by the operator on a real nats-server in operator mode: the server lets each
 * one publish and subscribe exactly its capsule's ACL and refuses it everything else.
 */
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpcAcl } from "../../core/security/acl/ipc-acl.js";
import { sidecarNatsPermissions } from "../../sidecar/nats-user.js";
import { type OperatorModeNats, startOperatorModeNats } from "./test-support.js";
import { accountSigner, durationNanos, issueNatsUser, jwtPermissions } from "./user-jwt.js";

let nats: OperatorModeNats;
const conns: NatsConnection[] = [];

beforeAll(async () => {
  nats = await startOperatorModeNats();
}, 30_000);

afterAll(async () => {
  for (const c of conns) await c.close().catch(() => {});
  await nats?.server.dispose();
});

async function connectAs(creds: string, inboxPrefix: string): Promise<NatsConnection> {
  const nc = await connect({
    servers: nats.server.url,
    authenticator: credsAuthenticator(new TextEncoder().encode(creds)),
    inboxPrefix,
    maxReconnectAttempts: 0,
  });
  conns.push(nc);
  return nc;
}

/** The first async error the server reports on `nc` (a permissions violation), or a timeout marker. */
function nextError(nc: NatsConnection): Promise<string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve("no error"), 3000);
    (async () => {
      for await (const s of nc.status()) {
        if (s.type === "error") {
          clearTimeout(timer);
          resolve(String((s as { error?: unknown }).error));
          return;
        }
      }
    })();
  });
}

describe("accountSigner", () => {
  it("refuses a seed that is not an account seed", () => {
    const pub = nats.account.getPublicKey();
    expect(() => accountSigner(pub, nats.seedOf(nats.operator))).toThrow(
      "NATS account signing key: expected an account nkey seed (SA…)",
    );
    expect(() => accountSigner("UABC", nats.seedOf(nats.accountSigningKey))).toThrow(
      /^NATS account "UABC": expected an account public key \(A…\)/,
    );
  });
});

describe("jwtPermissions", () => {
  it("renders allow lists, deny lists and response limits in the JWT's shape", () => {
    expect(
      jwtPermissions({
        publish: { deny: [">"] },
        subscribe: { allow: ["a.*"] },
        allow_responses: { max: 1, expires: "1m" },
      }),
    ).toEqual({ pub: { deny: [">"] }, sub: { allow: ["a.*"] }, resp: { max: 1, ttl: 60e9 } });
    expect(durationNanos("500ms")).toBe(5e8);
    expect(() => durationNanos("1d")).toThrow(
      'duration "1d" must be a number with ms, s, m or h, like "1m"',
    );
  });

  it("refuses an empty side, which nats-server would read as allow-all", () => {
    expect(() => jwtPermissions({ publish: {}, subscribe: { deny: [">"] } })).toThrow(
      "NATS permissions: publish has neither allow nor deny (would allow everything)",
    );
  });
});

describe("issueNatsUser on a real nats-server in operator mode", () => {
  const acl = new IpcAcl(
    { publish: ["llm.v1.chat.*"], subscribe: ["tool.v1.call.echo"] },
    { capsuleId: "echo" },
  );

  it("signs with the signing key on behalf of the account, as a non-bearer nkey user", async () => {
    const signer = accountSigner(nats.account.getPublicKey(), nats.seedOf(nats.accountSigningKey));
    const user = await issueNatsUser(signer, "echo", sidecarNatsPermissions(acl, "echo"));
    expect(user.publicKey).toMatch(/^U[A-Z2-7]{55}$/);
    const payload = JSON.parse(Buffer.from(user.jwt.split(".")[1] ?? "", "base64url").toString());
    expect(payload.iss).toBe(nats.accountSigningKey.getPublicKey());
    expect(payload.sub).toBe(user.publicKey);
    expect(payload.nats.issuer_account).toBe(nats.account.getPublicKey());
    expect(payload.nats.bearer_token).toBe(false);
    expect(user.creds).toContain("-----BEGIN NATS USER JWT-----");
    expect(user.creds).toContain("-----BEGIN USER NKEY SEED-----\nSU");
  });

  it("lets the user use exactly its ACL; the server refuses the rest", async () => {
    const signer = accountSigner(nats.account.getPublicKey(), nats.seedOf(nats.accountSigningKey));
    const echo = await issueNatsUser(signer, "echo", sidecarNatsPermissions(acl, "echo"));
    const callerAcl = new IpcAcl(
      { publish: ["tool.v1.call.echo"], subscribe: ["llm.v1.chat.*"] },
      { capsuleId: "caller" },
    );
    const caller = await issueNatsUser(
      signer,
      "caller",
      sidecarNatsPermissions(callerAcl, "caller"),
    );
    const ncEcho = await connectAs(echo.creds, "_INBOX.echo");
    const ncCaller = await connectAs(caller.creds, "_INBOX.caller");

    // Allowed both ways: a request to the echo tool, answered through the caller's inbox.
    ncEcho.subscribe("tool.v1.call.echo", {
      callback: (_e, m) => {
        m.respond(m.data);
      },
    });
    await ncEcho.flush();
    const reply = await ncCaller.request("tool.v1.call.echo", "hi", { timeout: 5000 });
    expect(reply.string()).toBe("hi");
    const seen: string[] = [];
    ncCaller.subscribe("llm.v1.chat.*", {
      callback: (_e, m) => {
        seen.push(m.subject);
      },
    });
    await ncCaller.flush();
    ncEcho.publish("llm.v1.chat.claude", "x");
    await ncEcho.flush();
    await ncCaller.flush();
    expect(seen).toEqual(["llm.v1.chat.claude"]);

    // Outside the ACL: the server refuses the publish and the subscription.
    const pubDenied = nextError(ncEcho);
    ncEcho.publish("tool.v1.call.shell", "rm -rf /");
    expect(await pubDenied).toMatch(/Permissions Violation for Publish to "tool.v1.call.shell"/);
    const subDenied = nextError(ncEcho);
    ncEcho.subscribe("_INBOX.caller.>");
    expect(await subDenied).toMatch(/Permissions Violation for Subscription to "_INBOX.caller.>"/);
  });

  it("is refused by the server when signed by a key the account does not list", async () => {
    const { createAccount } = await import("@nats-io/nkeys");
    const stranger = createAccount();
    const signer = accountSigner(nats.account.getPublicKey(), nats.seedOf(stranger));
    const user = await issueNatsUser(signer, "echo", sidecarNatsPermissions(acl, "echo"));
    await expect(connectAs(user.creds, "_INBOX.echo")).rejects.toThrow(/Authorization Violation/i);
  });
});
