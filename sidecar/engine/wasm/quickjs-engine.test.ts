import * as fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RecordingHost } from "../../../test/fixtures/wasm/recording-host.js";
import type { CallContext } from "../../abi/host.js";
import { GuestCallError } from "./call-error.js";
import { QuickJsEngine, type QuickJsEngineOptions } from "./quickjs-engine.js";

const source = fs.readFileSync(
  new URL("../../../test/fixtures/wasm/quickjs-guest.js", import.meta.url),
  "utf8",
);

const base: QuickJsEngineOptions = {
  source,
  memoryMb: 32,
  stackKb: 256,
  timeoutMs: 500,
  name: "guest",
  maxHostCallsPerCall: 1000,
};

function callCtx(overrides: Partial<CallContext> = {}): CallContext {
  return {
    callId: "c1",
    session: "s1",
    principal: "p1",
    capsule: "guest",
    token: undefined,
    deadline: Date.now() + 60_000,
    ...overrides,
  };
}

async function failure(p: Promise<unknown>): Promise<GuestCallError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof GuestCallError) return err;
    throw err;
  }
  throw new Error("expected the call to fail");
}

describe("QuickJsEngine", () => {
  let engine: QuickJsEngine;
  beforeAll(async () => {
    engine = await QuickJsEngine.create(base);
  });
  afterAll(async () => {
    await engine.stop();
  });

  it("echoes JSON input", async () => {
    const input = { a: [1, "two", null], b: { c: true } };
    expect(await engine.invoke("echo", input, callCtx(), new RecordingHost())).toEqual(input);
  });

  it("passes bytes both ways as Uint8Array", async () => {
    const host = new RecordingHost({ "/a.txt": new Uint8Array([0, 1, 254, 255]) });
    expect(await engine.invoke("readFile", { path: "/a.txt" }, callCtx(), host)).toEqual({
      isBytes: true,
      bytes: [0, 1, 254, 255],
    });
    await engine.invoke("writeBytes", { path: "/out", bytes: [9, 8, 7] }, callCtx(), host);
    expect(host.files.get("/out")).toEqual(new Uint8Array([9, 8, 7]));
    expect(host.methods()).toEqual(["fsRead", "fsWrite"]);
  });

  it("round-trips kv values and null for a missing key", async () => {
    const host = new RecordingHost();
    expect(
      await engine.invoke("kvRoundTrip", { key: "k", bytes: [1, 2, 3] }, callCtx(), host),
    ).toEqual({ got: [1, 2, 3], missing: null });
  });

  it("runs host calls in parallel within one call", async () => {
    const host = new RecordingHost({ "/a.txt": "aaa", "/b.txt": "bbbbb" });
    expect(await engine.invoke("parallelReads", {}, callCtx(), host)).toEqual([3, 5]);
  });

  it("bounds the host calls one call may have in flight", async () => {
    const host = new RecordingHost({ "/a.txt": "a" });
    expect(await engine.invoke("manyInFlight", {}, callCtx(), host)).toEqual({
      caught: { code: "denied", message: "more than 32 host calls in flight" },
    });
    expect(host.methods().length).toBe(32);
  });

  it("gives synchronous sys calls their values", async () => {
    const host = new RecordingHost();
    host.config_.set("mode", "fast");
    expect(await engine.invoke("sysCalls", {}, callCtx(), host)).toEqual({
      now: 1_700_000_000_000,
      cfg: "fast",
    });
    expect(host.calls[0]).toEqual({ method: "log", args: ["info", "hello", { n: 1 }] });
  });

  it("reads the time only through the host clock (Date.now and new Date())", async () => {
    const host = new RecordingHost();
    expect(await engine.invoke("clocks", {}, callCtx(), host)).toEqual({
      now: 1_700_000_000_000,
      constructed: 1_700_000_000_000,
      given: 5,
    });
    expect(host.methods().filter((m) => m === "clockNow").length).toBe(2);
  });

  it("exposes no ambient authority to the guest", async () => {
    expect(await engine.invoke("ambient", {}, callCtx(), new RecordingHost())).toEqual([
      "undefined",
      "undefined",
      "undefined",
      "undefined",
      "undefined",
      "undefined",
    ]);
  });

  it("surfaces a host error as a catchable guest exception with code and message", async () => {
    const r = await engine.invoke(
      "readCatching",
      { path: "/secret/key" },
      callCtx(),
      new RecordingHost(),
    );
    expect(r).toEqual({
      caught: { name: "HostError", code: "denied", message: "read of /secret/key is not allowed" },
    });
  });

  it("fails the call when the guest does not catch a host error", async () => {
    const err = await failure(
      engine.invoke("readUncaught", { path: "/nope" }, callCtx(), new RecordingHost()),
    );
    expect(err.code).toBe("guest_error");
    expect(err.guestCode).toBe("not_found");
    expect(err.message).toBe("guest.readUncaught: HostError: /nope does not exist");
  });

  it("refuses bad host-call arguments with HostError invalid", async () => {
    expect(await engine.invoke("badArgs", {}, callCtx(), new RecordingHost())).toEqual({
      code: "invalid",
      message: "path: Invalid input: expected string, received number",
    });
  });

  it("turns a guest throw into a failed call", async () => {
    const err = await failure(engine.invoke("fail", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("guest_error");
    expect(err.message).toBe("guest.fail: TypeError: bad input");
  });

  it("fails an unknown handler with no_handler", async () => {
    const err = await failure(engine.invoke("nope", {}, callCtx(), new RecordingHost()));
    expect(err.message).toBe('guest exports no handler named "nope"');
    expect(err.code).toBe("no_handler");
  });

  it("interrupts an infinite loop at the deadline and keeps working", async () => {
    const err = await failure(engine.invoke("spin", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("timeout");
    expect(err.message).toBe("guest.spin: deadline passed");
    expect(await engine.invoke("echo", 1, callCtx(), new RecordingHost())).toBe(1);
  });

  it("honours the CallContext deadline when it is earlier", async () => {
    const err = await failure(
      engine.invoke("spin", {}, callCtx({ deadline: Date.now() + 20 }), new RecordingHost()),
    );
    expect(err.code).toBe("timeout");
  });

  it("times out a call waiting on a host call that never settles", async () => {
    const err = await failure(engine.invoke("hang", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("timeout");
    expect(await engine.invoke("echo", 2, callCtx(), new RecordingHost())).toBe(2);
  });

  it("fails a handler whose promise can never settle", async () => {
    const err = await failure(engine.invoke("neverSettles", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("bad_guest");
    expect(err.message).toBe(
      "guest.neverSettles: the handler's promise can never settle (no host call in flight)",
    );
  });

  it("fails deep recursion with a stack overflow and keeps working", async () => {
    const err = await failure(engine.invoke("recurse", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("stack_overflow");
    expect(err.message).toBe("guest.recurse: stack overflow (limit 256 KiB)");
    expect(await engine.invoke("echo", 3, callCtx(), new RecordingHost())).toBe(3);
  });

  it("refuses output over the cap", async () => {
    const err = await failure(engine.invoke("huge", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("too_large");
    expect(err.message).toBe("guest.huge: output is larger than 1048576 bytes");
  });

  it("refuses input over the cap", async () => {
    const err = await failure(
      engine.invoke("echo", "y".repeat(1024 * 1024), callCtx(), new RecordingHost()),
    );
    expect(err.code).toBe("too_large");
    expect(err.message).toBe("guest.echo: input is larger than 1048576 bytes");
  });

  it("refuses output that is not JSON", async () => {
    const err = await failure(engine.invoke("notJson", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("bad_guest");
  });

  it("bounds a host-call flood, even when the guest swallows the error", async () => {
    for (const fn of ["flood", "floodSwallowed"]) {
      const host = new RecordingHost();
      const err = await failure(engine.invoke(fn, {}, callCtx(), host));
      expect(err.code).toBe("host_call_limit");
      expect(err.message).toBe(`guest.${fn}: more than 1000 host calls in one call`);
      expect(host.logCount).toBe(1000);
    }
    expect(await engine.invoke("echo", 4, callCtx(), new RecordingHost())).toBe(4);
  });

  it("runs jobs left behind by a handler under that call's host, never the next one", async () => {
    const first = new RecordingHost({ "/a.txt": "a" });
    expect(await engine.invoke("leakAfterReturn", {}, callCtx(), first)).toBe("returned");
    const second = new RecordingHost();
    expect(await engine.invoke("echo", 5, callCtx(), second)).toBe(5);
    expect(first.methods()).toEqual(["fsRead"]);
    expect(second.calls).toEqual([]);
  });

  it("serialises concurrent invokes and answers each one", async () => {
    const host = new RecordingHost({ "/a.txt": "a", "/b.txt": "bb" });
    const calls = Array.from({ length: 8 }, (_, i) =>
      i % 2 === 0
        ? engine.invoke("echo", i, callCtx(), host)
        : engine.invoke("parallelReads", {}, callCtx(), host),
    );
    expect(await Promise.all(calls)).toEqual([0, [1, 2], 2, [1, 2], 4, [1, 2], 6, [1, 2]]);
  });
});

describe("QuickJsEngine memory cap", () => {
  it("fails a memory bomb with out_of_memory, stays under the cap, and recreates the instance", async () => {
    const engine = await QuickJsEngine.create({ ...base, memoryMb: 24 });
    try {
      expect(engine.memoryMaxBytes).toBe(24 * 1024 * 1024);
      expect(await engine.invoke("counter", {}, callCtx(), new RecordingHost())).toBe(1);
      const err = await failure(engine.invoke("bomb", {}, callCtx(), new RecordingHost()));
      expect(err.code).toBe("out_of_memory");
      expect(err.message).toBe("guest.bomb: out of memory (limit 24 MiB)");
      // The next call runs in a fresh instance: the bomb's data and the counter are gone.
      expect(await engine.invoke("counter", {}, callCtx(), new RecordingHost())).toBe(1);
      expect(engine.generation).toBe(2);
      expect(engine.memoryBytes).toBeLessThanOrEqual(engine.memoryMaxBytes);
    } finally {
      await engine.stop();
    }
  });
});

describe("QuickJsEngine memory cap (linear memory)", () => {
  it("lets the guest's memory grow up to the maximum and no further", async () => {
    const engine = await QuickJsEngine.create({ ...base, memoryMb: 24 });
    try {
      const initial = engine.memoryBytes;
      expect(initial).toBe(16 * 1024 * 1024);
      expect(await engine.invoke("hold", { mb: 14 }, callCtx(), new RecordingHost())).toBe(1);
      expect(engine.memoryBytes).toBeGreaterThan(initial);
      expect(engine.memoryBytes).toBeLessThanOrEqual(24 * 1024 * 1024);
      const err = await failure(engine.invoke("hold", { mb: 8 }, callCtx(), new RecordingHost()));
      expect(err.code).toBe("out_of_memory");
    } finally {
      await engine.stop();
    }
  });

  it("recreates the instance when a host result cannot be copied into the guest", async () => {
    const engine = await QuickJsEngine.create({ ...base, memoryMb: 20 });
    try {
      const host = new RecordingHost({ "/big": new Uint8Array(6 * 1024 * 1024) });
      const err = await failure(engine.invoke("readFile", { path: "/big" }, callCtx(), host));
      expect(err.code).toBe("out_of_memory");
      expect(await engine.invoke("echo", 1, callCtx(), new RecordingHost())).toBe(1);
      expect(engine.generation).toBe(2);
    } finally {
      await engine.stop();
    }
  });
});

describe("QuickJsEngine lifecycle", () => {
  it("rejects limits outside the safe range", async () => {
    await expect(QuickJsEngine.create({ ...base, stackKb: 512 })).rejects.toThrow(
      "guest: stackKb must be an integer in 1..256, got 512",
    );
    await expect(QuickJsEngine.create({ ...base, memoryMb: 8 })).rejects.toThrow(
      "guest: memoryMb must be an integer ≥ 20, got 8",
    );
  });

  it("reports a bundle that fails to load", async () => {
    await expect(QuickJsEngine.create({ ...base, source: "export const x = ;" })).rejects.toThrow(
      "guest: the bundle failed to load: unexpected token in expression: ';'",
    );
  });

  it("loads a bundle with top-level await", async () => {
    const tla = "const v = await Promise.resolve(7);\nexport function seven() { return v; }";
    const engine = await QuickJsEngine.create({ ...base, source: tla });
    try {
      expect(await engine.invoke("seven", {}, callCtx(), new RecordingHost())).toBe(7);
    } finally {
      await engine.stop();
    }
  });

  it("interrupts a bundle that loops while loading", async () => {
    await expect(QuickJsEngine.create({ ...base, source: "for (;;) {}" })).rejects.toThrow(
      "guest: the bundle failed to load: interrupted",
    );
  });

  it("refuses a bundle that calls the host while loading", async () => {
    await expect(
      QuickJsEngine.create({ ...base, source: 'astrid.log("info", "x");\nexport const a = 1;' }),
    ).rejects.toThrow("guest: the bundle failed to load: no call in progress");
  });

  it("stop() disposes the instance and fails queued and later calls", async () => {
    const engine = await QuickJsEngine.create(base);
    expect(engine.memoryBytes).toBeGreaterThan(0);
    const queued = failure(engine.invoke("echo", 1, callCtx(), new RecordingHost()));
    await engine.stop();
    expect((await queued).code).toBe("stopped");
    expect(engine.memoryBytes).toBe(0);
    const err = await failure(engine.invoke("echo", 1, callCtx(), new RecordingHost()));
    expect(err.code).toBe("stopped");
    expect(err.message).toBe("guest: the engine is stopped");
  });
});
