import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsServerHandle, startNatsServer } from "../../test/harness/nats-server.js";
import { NatsLink } from "./nats-link.js";

describe("NatsLink", () => {
  let nats: NatsServerHandle;
  beforeAll(async () => {
    nats = await startNatsServer({ jetstream: false });
  }, 30_000);
  afterAll(async () => {
    await nats?.dispose();
  });

  it("connects on first use and hands every caller the same connection", async () => {
    const link = new NatsLink({ servers: nats.url });
    const [a, b] = await Promise.all([link.get(), link.get()]);
    expect(a).toBe(b);
    await link.close();
    await expect(link.get()).rejects.toThrow("the operator's NATS link is closed");
  });

  it("rejects while NATS cannot be reached and connects on a later call once it is back", async () => {
    await nats.stop();
    const link = new NatsLink({ servers: nats.url, connectTimeoutMs: 1000 });
    await expect(link.get()).rejects.toThrow(`cannot connect to NATS at ${nats.url}: `);
    await nats.start();
    expect((await link.get()).isClosed()).toBe(false);
    await link.close();
  }, 30_000);

  it("names an unreadable credentials file", async () => {
    const link = new NatsLink({ servers: nats.url, credsFile: "/nonexistent/operator.creds" });
    await expect(link.get()).rejects.toThrow(
      "cannot read the NATS credentials file /nonexistent/operator.creds: ENOENT",
    );
  });
});
