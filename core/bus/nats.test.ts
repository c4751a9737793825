import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsServerHandle, startNatsServer } from "../../test/harness/nats-server.js";
import type { BusStatus } from "./bus.js";
import { busContract } from "./contract.js";
import { BusConnectError, PermissionError } from "./errors.js";
import { connectNatsBus } from "./nats.js";

const enc = (s: string) => new TextEncoder().encode(s);

let server: NatsServerHandle;
beforeAll(async () => {
  server = await startNatsServer();
});
afterAll(async () => {
  await server?.dispose();
});

// Requests and publishes come from a second connection, as between two capsules' sidecars.
busContract("nats", async ({ onError }) => ({
  bus: await connectNatsBus({ servers: server.url, name: "contract", onError }),
  extra: { peer: await connectNatsBus({ servers: server.url, name: "contract-peer", onError }) },
}));

function waitForStatus(seen: BusStatus[], s: BusStatus): Promise<void> {
  return new Promise((resolve) => {
    const poll = () => (seen.includes(s) ? resolve() : setTimeout(poll, 10));
    poll();
  });
}

describe("NATS bus specifics", () => {
  it("reports the server's max_payload", async () => {
    const small = await startNatsServer({ maxPayload: 4096, jetstream: false });
    try {
      const bus = await connectNatsBus({ servers: small.url });
      expect(bus.maxPayload).toBe(4096);
      expect(() => bus.publish("a.b", new Uint8Array(4097))).toThrow(
        "payload of 4097 bytes exceeds the bus limit of 4096 bytes",
      );
      await bus.close();
    } finally {
      await small.dispose();
    }
  });

  it("fails to connect with a clear error when no server listens", async () => {
    const gone = await startNatsServer({ jetstream: false });
    await gone.dispose();
    await expect(connectNatsBus({ servers: gone.url })).rejects.toThrow(BusConnectError);
    await expect(connectNatsBus({ servers: gone.url })).rejects.toThrow(
      `cannot connect to NATS at ${gone.url}: `,
    );
  });

  it("reconnects after the server restarts and keeps its subscriptions", async () => {
    const own = await startNatsServer({ jetstream: false });
    try {
      const bus = await connectNatsBus({
        servers: own.url,
        reconnect: { initialMs: 20, maxMs: 200 },
      });
      const statuses: BusStatus[] = [];
      bus.onStatus((s) => statuses.push(s));
      const got: string[] = [];
      bus.subscribe("rc.echo", (m) => {
        got.push(new TextDecoder().decode(m.data));
        m.respond(m.data);
      });
      await bus.flush();

      await own.stop();
      await waitForStatus(statuses, "disconnected");
      await own.start();
      await waitForStatus(statuses, "connected");

      expect(statuses.slice(0, 2)).toEqual(["disconnected", "reconnecting"]);
      expect(statuses.at(-1)).toBe("connected");
      // The subscription made before the restart answers again, through the new server.
      const r = await bus.request("rc.echo", enc("after"), { timeoutMs: 5000 });
      expect(new TextDecoder().decode(r.data)).toBe("after");
      expect(got).toEqual(["after"]);
      await bus.close();
      expect(statuses.at(-1)).toBe("closed");
    } finally {
      await own.dispose();
    }
  });

  it("closes without waiting for a server that is gone", async () => {
    const own = await startNatsServer({ jetstream: false });
    try {
      const bus = await connectNatsBus({ servers: own.url, reconnect: { initialMs: 20 } });
      const statuses: BusStatus[] = [];
      bus.onStatus((s) => statuses.push(s));
      bus.subscribe("gone.x", () => {});
      await own.stop();
      await waitForStatus(statuses, "disconnected");
      // Would hang on a drain that needs the server; the test's own timeout would fail it.
      await bus.close();
      expect(statuses.at(-1)).toBe("closed");
      expect(() => bus.publish("gone.x", enc(""))).toThrow("the bus is closed");
    } finally {
      await own.dispose();
    }
  });

  describe("server-side permissions (the IPC ACL enforced a second time)", () => {
    let authServer: NatsServerHandle;
    beforeAll(async () => {
      authServer = await startNatsServer({
        jetstream: false,
        config:
          'authorization { users = [ {user: a, password: b, permissions: {publish: ["ok.>"], subscribe: ["ok.>", "_INBOX.>"]}} ] }',
      });
    });
    afterAll(async () => {
      await authServer?.dispose();
    });

    it("refuses to connect with a wrong password", async () => {
      await expect(
        connectNatsBus({ servers: authServer.url, user: "a", pass: "wrong" }),
      ).rejects.toThrow(BusConnectError);
    });

    it("reports a refused publish through onError as a PermissionError", async () => {
      const errors: Error[] = [];
      const bus = await connectNatsBus({
        servers: authServer.url,
        user: "a",
        pass: "b",
        onError: (e) => errors.push(e),
      });
      const got: string[] = [];
      bus.subscribe("ok.>", (m) => void got.push(m.subject));
      // A sidecar bypassed by its capsule still cannot reach a subject outside the manifest.
      bus.publish("secret.x", enc("leak"));
      bus.publish("ok.fine", enc("fine"));
      await bus.flush();
      while (errors.length === 0) await new Promise((r) => setTimeout(r, 10));
      expect(errors).toEqual([new PermissionError("publish", "secret.x")]);
      expect(errors[0]!.message).toBe(
        'the NATS server refused to publish "secret.x": permissions violation',
      );
      expect(got).toEqual(["ok.fine"]);
      await bus.close();
    });

    it("rejects a refused request with a PermissionError", async () => {
      const bus = await connectNatsBus({
        servers: authServer.url,
        user: "a",
        pass: "b",
        onError: () => {},
      });
      await expect(bus.request("secret.y", enc(""), { timeoutMs: 5000 })).rejects.toThrow(
        new PermissionError("publish", "secret.y"),
      );
      await bus.close();
    });

    it("reports a refused subscription through onError", async () => {
      const errors: Error[] = [];
      const bus = await connectNatsBus({
        servers: authServer.url,
        user: "a",
        pass: "b",
        onError: (e) => errors.push(e),
      });
      bus.subscribe("secret.>", () => {});
      await bus.flush();
      while (errors.length === 0) await new Promise((r) => setTimeout(r, 10));
      expect(errors).toEqual([new PermissionError("subscribe", "secret.>")]);
      await bus.close();
    });
  });
});
