import { describe, expect, it } from "vitest";
import { busContract } from "./contract.js";
import { EmbeddedBus } from "./embedded.js";
import { PayloadTooLargeError } from "./errors.js";

busContract("embedded", async ({ onError }) => ({ bus: new EmbeddedBus({ onError }) }));

describe("EmbeddedBus specifics", () => {
  const enc = (s: string) => new TextEncoder().encode(s);

  it("gives each subscriber its own copy of the payload", async () => {
    // One capsule must not be able to change the bytes another capsule receives, and a
    // publisher reusing its buffer must not change what was sent.
    const bus = new EmbeddedBus();
    const got: Uint8Array[] = [];
    bus.subscribe("copy.a", (m) => {
      got.push(m.data);
      m.data[0] = 0;
    });
    bus.subscribe("copy.a", (m) => {
      got.push(m.data);
    });
    const buf = enc("abc");
    bus.publish("copy.a", buf);
    buf[1] = 0;
    await bus.flush();
    expect(got.map((d) => new TextDecoder().decode(d))).toEqual(["\0bc", "abc"]);
    await bus.close();
  });

  it("balances a queue group round-robin", async () => {
    const bus = new EmbeddedBus();
    const who: string[] = [];
    bus.subscribe("rr.x", () => void who.push("a"), { queue: "q" });
    bus.subscribe("rr.x", () => void who.push("b"), { queue: "q" });
    for (let i = 0; i < 4; i++) bus.publish("rr.x", enc(""));
    await bus.flush();
    expect(who).toEqual(["a", "b", "a", "b"]);
    await bus.close();
  });

  it("takes its payload limit from the options", async () => {
    const bus = new EmbeddedBus({ maxPayload: 8 });
    expect(() => bus.publish("a.b", new Uint8Array(9))).toThrow(new PayloadTooLargeError(9, 8));
    await bus.close();
  });

  it("yields to the event loop when handlers answer each other forever", async () => {
    // Two capsules ping-ponging must not starve timers (request deadlines) and I/O.
    const bus = new EmbeddedBus();
    let hops = 0;
    bus.subscribe("pp.ping", () => {
      hops++;
      bus.publish("pp.pong", enc(""));
    });
    bus.subscribe("pp.pong", () => bus.publish("pp.ping", enc("")));
    bus.publish("pp.ping", enc(""));
    await new Promise((r) => setTimeout(r, 1));
    expect(hops).toBeGreaterThan(0);
    await bus.close();
  });
});
