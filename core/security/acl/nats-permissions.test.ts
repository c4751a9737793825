import { connect, type NatsConnection, type Status } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsServerHandle, startNatsServer } from "../../../test/harness/nats-server.js";
import { IpcAcl } from "./ipc-acl.js";
import { natsAuthorizationConfig, natsPermissions, natsUserConfig } from "./nats-permissions.js";

const requesterAcl = new IpcAcl(
  { publish: ["svc.v1.echo"], subscribe: [] },
  { capsuleId: "requester" },
);
const responderAcl = new IpcAcl(
  { publish: ["svc.v1.result"], subscribe: ["svc.v1.echo"] },
  { capsuleId: "responder" },
);
const mutedAcl = new IpcAcl({ publish: [], subscribe: [] }, { capsuleId: "muted" });

describe("natsPermissions", () => {
  it("adds the capsule's inbox to subscribe and allow_responses for a subscriber", () => {
    expect(natsPermissions(responderAcl)).toEqual({
      publish: { allow: ["svc.v1.result"] },
      subscribe: { allow: ["svc.v1.echo", "_INBOX.responder.>"] },
      allow_responses: { max: 1, expires: "1m" },
    });
  });

  it("writes an empty list as deny '>' because nats-server reads an empty allow as no limit", () => {
    expect(natsPermissions(mutedAcl)).toEqual({
      publish: { deny: [">"] },
      subscribe: { deny: [">"] },
    });
  });

  it("refuses a response expiry that is not a Go duration", () => {
    expect(() => natsPermissions(responderAcl, { responseExpires: "1 minute" })).toThrow(
      'responseExpires "1 minute" must be a duration like "30s", "1m" or "500ms"',
    );
  });

  it("renders a user entry that cannot be broken out of by a quote in the password", () => {
    const entry = natsUserConfig("u", 'p"}, {user: "x', natsPermissions(mutedAcl));
    expect(JSON.parse(entry).password).toBe('p"}, {user: "x');
  });
});

/** Collects the permission errors the server sends back to one connection. */
function permissionErrors(nc: NatsConnection): string[] {
  const seen: string[] = [];
  void (async () => {
    for await (const s of nc.status() as AsyncIterable<Status>) {
      if (s.type === "error") seen.push(s.error.message);
    }
  })();
  return seen;
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`gave up waiting for ${what}`);
}

describe("nats-server enforces the same ACL", () => {
  let server: NatsServerHandle;
  const conns: NatsConnection[] = [];
  const as = async (user: string, acl: IpcAcl) => {
    const nc = await connect({
      servers: server.url,
      user,
      pass: `${user}-pw`,
      inboxPrefix: acl.inboxPrefix,
    });
    conns.push(nc);
    return nc;
  };

  beforeAll(async () => {
    server = await startNatsServer({
      jetstream: false,
      config: natsAuthorizationConfig([
        natsUserConfig("requester", "requester-pw", natsPermissions(requesterAcl)),
        natsUserConfig("responder", "responder-pw", natsPermissions(responderAcl)),
        natsUserConfig("muted", "muted-pw", natsPermissions(mutedAcl)),
      ]),
    });
  });

  afterAll(async () => {
    await Promise.all(conns.map((c) => c.close()));
    await server?.dispose();
  });

  it("lets request/reply through the requester's inbox and allow_responses", async () => {
    const responder = await as("responder", responderAcl);
    const sub = responder.subscribe("svc.v1.echo");
    void (async () => {
      for await (const m of sub) m.respond(`echo:${m.string()}`);
    })();
    await responder.flush();
    const requester = await as("requester", requesterAcl);
    const reply = await requester.request("svc.v1.echo", "hi", { timeout: 5000 });
    expect(reply.string()).toBe("echo:hi");
  });

  it("refuses a publish outside ipc_publish at the server", async () => {
    const responder = await as("responder", responderAcl);
    const errors = permissionErrors(responder);
    responder.publish("svc.v1.echo", "not mine to send");
    await until(() => errors.length > 0, "a publish permission violation");
    expect(errors[0]).toBe('Permissions Violation for Publish to "svc.v1.echo"');
  });

  it("refuses a wider subscription and another capsule's inbox at the server", async () => {
    const responder = await as("responder", responderAcl);
    const wide = responder.subscribe("svc.v1.*");
    const inbox = responder.subscribe("_INBOX.requester.>");
    const [wideClosed, inboxClosed] = await Promise.all([wide.closed, inbox.closed]);
    expect((wideClosed as Error).message).toBe(
      'Permissions Violation for Subscription to "svc.v1.*"',
    );
    expect((inboxClosed as Error).message).toBe(
      'Permissions Violation for Subscription to "_INBOX.requester.>"',
    );
  });

  it("refuses everything for a capsule whose lists are empty", async () => {
    const muted = await as("muted", mutedAcl);
    const errors = permissionErrors(muted);
    muted.publish("svc.v1.echo", "x");
    const sub = muted.subscribe("svc.v1.echo");
    expect(((await sub.closed) as Error).message).toBe(
      'Permissions Violation for Subscription to "svc.v1.echo"',
    );
    await until(() => errors.some((e) => e.includes("Publish")), "a publish violation");
    expect(errors).toContain('Permissions Violation for Publish to "svc.v1.echo"');
  });
});
