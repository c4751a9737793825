import net from "node:net";
import { Algorithms, encodeAccount, encodeOperator } from "@nats-io/jwt";
import { createAccount, createOperator } from "@nats-io/nkeys";
import { connect } from "@nats-io/transport-node";
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

  it("runs in operator mode: a client without a user JWT is refused", async () => {
    const operator = createOperator();
    const system = createAccount();
    const v2 = { algorithm: Algorithms.v2 };
    const operatorJwt = await encodeOperator(
      "o",
      operator,
      { system_account: system.getPublicKey() },
      v2,
    );
    const systemJwt = await encodeAccount("SYS", system, {}, { ...v2, signer: operator });
    const op = await startNatsServer({
      jetstream: false,
      operator: {
        operatorJwt,
        systemAccount: system.getPublicKey(),
        accounts: { [system.getPublicKey()]: systemJwt },
      },
    });
    try {
      await expect(connect({ servers: op.url, maxReconnectAttempts: 0 })).rejects.toThrow(
        /Authorization Violation/i,
      );
    } finally {
      await op.dispose();
    }
  });
});
