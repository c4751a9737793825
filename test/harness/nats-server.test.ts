import net from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { type NatsServerHandle, startNatsServer } from "./nats-server.js";

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

describe("nats-server harness", () => {
  let srv: NatsServerHandle | undefined;
  afterAll(async () => srv?.dispose());

  it("starts on a free loopback port, stops, and starts again on the same port", async () => {
    srv = await startNatsServer();
    expect(srv.url).toBe(`nats://127.0.0.1:${srv.port}`);
    expect(await canConnect(srv.port)).toBe(true);
    await srv.stop();
    expect(await canConnect(srv.port)).toBe(false);
    await srv.start();
    expect(await canConnect(srv.port)).toBe(true);
  });

  it("reports a bad config with the server's own message", async () => {
    await expect(startNatsServer({ config: "this is { not valid" })).rejects.toThrow(
      /nats-server exited/,
    );
  });
});
