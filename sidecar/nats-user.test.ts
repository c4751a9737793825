/**
 * A task-mode sidecar's NATS user on a real nats-server: it may send its own session's prompt
 * and no other session's; a sidecar that is not in task mode may send none.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PermissionError } from "../core/bus/errors.js";
import { connectNatsBus, type NatsBus } from "../core/bus/nats.js";
import { IpcAcl } from "../core/security/acl/ipc-acl.js";
import { natsAuthorizationConfig, natsUserConfig } from "../core/security/acl/nats-permissions.js";
import { type NatsServerHandle, startNatsServer } from "../test/harness/nats-server.js";
import { sidecarNatsPermissions } from "./nats-user.js";

const PASSWORD = "nats-user-test-password";
const acl = new IpcAcl(
  {
    publish: ["llm.v1.chat.*", "session.v1.events.*"],
    subscribe: ["session.v1.prompt.*"],
  },
  { capsuleId: "react" },
);

let nats: NatsServerHandle;
const buses: NatsBus[] = [];

beforeAll(async () => {
  nats = await startNatsServer({
    config: natsAuthorizationConfig([
      natsUserConfig(
        "task",
        PASSWORD,
        sidecarNatsPermissions(acl, "react", { taskSession: "s-1" }),
      ),
      natsUserConfig("serve", PASSWORD, sidecarNatsPermissions(acl, "react")),
      natsUserConfig("orchestrator", PASSWORD, {
        subscribe: { allow: ["session.v1.prompt.*"] },
        publish: { deny: [">"] },
        allow_responses: { max: 1, expires: "1m" },
      }),
    ]),
  });
});

afterAll(async () => {
  for (const b of buses) await b.close();
  await nats?.dispose();
});

async function connect(user: string): Promise<NatsBus> {
  const bus = await connectNatsBus({
    servers: nats.url,
    user,
    pass: PASSWORD,
    inboxPrefix: "_INBOX.react",
    onError: () => {},
  });
  buses.push(bus);
  return bus;
}

async function errorOf(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe("sidecarNatsPermissions", () => {
  it("lets a task-mode sidecar send its own session's prompt only", async () => {
    const orchestrator = await connect("orchestrator");
    orchestrator.subscribe("session.v1.prompt.*", (m) => m.respond(new TextEncoder().encode("ok")));
    await orchestrator.flush();
    const task = await connect("task");
    const reply = await task.request("session.v1.prompt.s-1", new Uint8Array(), {
      timeoutMs: 5000,
    });
    expect(new TextDecoder().decode(reply.data)).toBe("ok");
    expect(
      await errorOf(task.request("session.v1.prompt.s-2", new Uint8Array(), { timeoutMs: 5000 })),
    ).toBeInstanceOf(PermissionError);
    const serve = await connect("serve");
    expect(
      await errorOf(serve.request("session.v1.prompt.s-1", new Uint8Array(), { timeoutMs: 5000 })),
    ).toBeInstanceOf(PermissionError);
  });

  it("adds the prompt subject only in task mode", () => {
    const withTask = sidecarNatsPermissions(acl, "react", { taskSession: "s-1" });
    const without = sidecarNatsPermissions(acl, "react");
    expect(withTask.publish.allow).toEqual([
      ...(without.publish.allow ?? []),
      "session.v1.prompt.s-1",
    ]);
  });
});
