import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RecordingHost } from "../../../test/fixtures/wasm/recording-host.js";
import { compileWat, coreGuestWat } from "../../../test/fixtures/wasm/wat.js";
import type { CallContext } from "../../abi/host.js";
import { GuestCallError } from "./call-error.js";
import { CoreWasmEngine, type CoreWasmEngineOptions } from "./core-engine.js";

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

let wasm: Uint8Array;
let base: CoreWasmEngineOptions;

beforeAll(async () => {
  wasm = await compileWat(coreGuestWat());
  base = { wasm, memoryMb: 4, timeoutMs: 500, name: "guest", maxHostCallsPerCall: 1000 };
});

describe("CoreWasmEngine", () => {
  let engine: CoreWasmEngine;
  beforeAll(async () => {
    engine = await CoreWasmEngine.create(base);
  });
  afterAll(async () => {
    await engine.stop();
  });

  it("lists the exported handlers", () => {
    expect(engine.handlers).toEqual([
      "echo",
      "fs_read",
      "fs_write",
      "spin",
      "bomb",
      "trap",
      "recurse",
      "huge",
      "bad_ptr",
      "flood",
    ]);
  });

  it("echoes JSON input", async () => {
    const input = { a: [1, "two", null], b: { c: true }, s: "é✓" };
    expect(await engine.invoke("echo", input, callCtx(), new RecordingHost())).toEqual(input);
  });

  it("round-trips a host call with bytes in both directions", async () => {
    const host = new RecordingHost({ "/a.txt": new Uint8Array([0, 1, 254, 255]) });
    expect(await engine.invoke("fs_read", { path: "/a.txt" }, callCtx(), host)).toEqual({
      ok: new Uint8Array([0, 1, 254, 255]),
    });
    expect(
      await engine.invoke(
        "fs_write",
        { path: "/out", data: new Uint8Array([9, 8, 7]) },
        callCtx(),
        host,
      ),
    ).toEqual({ ok: null });
    expect(host.files.get("/out")).toEqual(new Uint8Array([9, 8, 7]));
    expect(host.methods()).toEqual(["fsRead", "fsWrite"]);
  });

  it("hands a host error to the guest as an error result", async () => {
    const r = await engine.invoke("fs_read", { path: "/secret/x" }, callCtx(), new RecordingHost());
    expect(r).toEqual({ error: { code: "denied", message: "read of /secret/x is not allowed" } });
  });

  it("refuses bad host-call arguments with invalid", async () => {
    const r = await engine.invoke("fs_read", { path: 42 }, callCtx(), new RecordingHost());
    expect(r).toEqual({
      error: { code: "invalid", message: "path: Invalid input: expected string, received number" },
    });
  });

  it("fails an unknown handler, and refuses to call alloc or dealloc as one", async () => {
    for (const fn of ["nope", "alloc", "dealloc"]) {
      const err = await failure(engine.invoke(fn, {}, callCtx(), new RecordingHost()));
      expect(err.code).toBe("no_handler");
      expect(err.message).toBe(`guest exports no handler named "${fn}"`);
    }
  });

  it("terminates a looping guest at the deadline and starts a new worker", async () => {
    const before = engine.generation;
    const err = await failure(engine.invoke("spin", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("timeout");
    expect(err.message).toBe("guest.spin: deadline passed");
    expect(await engine.invoke("echo", 1, callCtx(), new RecordingHost())).toBe(1);
    expect(engine.generation).toBe(before + 1);
  });

  it("honours the CallContext deadline when it is earlier", async () => {
    const err = await failure(
      engine.invoke("spin", {}, callCtx({ deadline: Date.now() + 20 }), new RecordingHost()),
    );
    expect(err.code).toBe("timeout");
  });

  it("times out a guest blocked on a host call that never settles", async () => {
    const err = await failure(
      engine.invoke("fs_read", { path: "/hang" }, callCtx(), new RecordingHost()),
    );
    expect(err.code).toBe("timeout");
    expect(await engine.invoke("echo", 2, callCtx(), new RecordingHost())).toBe(2);
  });

  it("fails a memory-growth bomb with out_of_memory and keeps working", async () => {
    const err = await failure(engine.invoke("bomb", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("out_of_memory");
    expect(err.message).toBe("guest.bomb: trap at its memory maximum: unreachable");
    expect(await engine.invoke("echo", 3, callCtx(), new RecordingHost())).toBe(3);
  });

  it("fails a trap with guest_error and keeps working", async () => {
    const err = await failure(engine.invoke("trap", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("guest_error");
    expect(err.message).toBe("guest.trap: trap: unreachable");
    expect(await engine.invoke("echo", 4, callCtx(), new RecordingHost())).toBe(4);
  });

  it("fails unbounded recursion with stack_overflow", async () => {
    const err = await failure(engine.invoke("recurse", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("stack_overflow");
    expect(err.message).toBe("guest.recurse: stack overflow");
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

  it("refuses an output pointer outside the guest's memory", async () => {
    const err = await failure(engine.invoke("bad_ptr", {}, callCtx(), new RecordingHost()));
    expect(err.code).toBe("bad_guest");
    expect(err.message).toBe("guest.bad_ptr: pointer 2147418112+16 is outside the guest's memory");
  });

  it("bounds a host-call flood", async () => {
    const host = new RecordingHost();
    const err = await failure(engine.invoke("flood", {}, callCtx(), host));
    expect(err.code).toBe("host_call_limit");
    expect(err.message).toBe("guest.flood: more than 1000 host calls in one call");
    expect(host.logCount).toBe(1000);
    expect(await engine.invoke("echo", 5, callCtx(), new RecordingHost())).toBe(5);
  });

  it("serialises concurrent invokes and answers each one", async () => {
    const host = new RecordingHost({ "/a.txt": "a" });
    const calls = Array.from({ length: 8 }, (_, i) =>
      i % 2 === 0
        ? engine.invoke("echo", i, callCtx(), host)
        : engine.invoke("fs_read", { path: "/a.txt" }, callCtx(), host),
    );
    const a = { ok: new Uint8Array([97]) };
    expect(await Promise.all(calls)).toEqual([0, a, 2, a, 4, a, 6, a]);
  });
});

describe("CoreWasmEngine admission", () => {
  const mod = (memory: string, extra = "") =>
    compileWat(`(module ${extra} (memory (export "memory") ${memory})
      (func (export "alloc") (param i32) (result i32) (i32.const 0)))`);

  it("refuses a memory without a maximum", async () => {
    await expect(CoreWasmEngine.create({ ...base, wasm: await mod("1") })).rejects.toThrow(
      "guest: its memory declares no maximum; build it with a maximum ≤ 4 MiB",
    );
  });

  it("refuses a memory maximum above the budget", async () => {
    await expect(CoreWasmEngine.create({ ...base, wasm: await mod("1 128") })).rejects.toThrow(
      "guest: its memory maximum is 8 MiB, above the budget of 4 MiB",
    );
  });

  it("refuses any import other than astrid.call", async () => {
    const wasmWithWasi = await mod(
      "1 2",
      `(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))`,
    );
    await expect(CoreWasmEngine.create({ ...base, wasm: wasmWithWasi })).rejects.toThrow(
      "guest: imports function wasi_snapshot_preview1.fd_write; only the function astrid.call is provided",
    );
  });

  it("refuses a module without alloc, and bytes that are not WASM", async () => {
    const noAlloc = await compileWat(`(module (memory (export "memory") 1 2))`);
    await expect(CoreWasmEngine.create({ ...base, wasm: noAlloc })).rejects.toThrow(
      "guest: must export alloc(len: i32) -> i32",
    );
    await expect(
      CoreWasmEngine.create({ ...base, wasm: new TextEncoder().encode("not wasm") }),
    ).rejects.toThrow(/^guest: not a valid WebAssembly module/);
  });
});

describe("CoreWasmEngine lifecycle", () => {
  it("times out a guest whose start function never returns", async () => {
    const looping = await compileWat(`(module (memory (export "memory") 1 2)
      (func (export "alloc") (param i32) (result i32) (i32.const 0))
      (func $spin (loop $l (br $l)))
      (start $spin))`);
    await expect(CoreWasmEngine.create({ ...base, wasm: looping })).rejects.toThrow(
      "guest: instantiating the guest timed out",
    );
  });

  it("fails create() when the start function traps", async () => {
    const trapping = await compileWat(`(module (memory (export "memory") 1 2)
      (func (export "alloc") (param i32) (result i32) (i32.const 0))
      (func $boom unreachable)
      (start $boom))`);
    await expect(CoreWasmEngine.create({ ...base, wasm: trapping })).rejects.toThrow(
      "guest: the worker failed: unreachable while instantiating the guest",
    );
  });

  it("stop() terminates the worker and fails queued and later calls", async () => {
    const engine = await CoreWasmEngine.create(base);
    expect(engine.workerAlive).toBe(true);
    const running = engine.invoke("echo", 1, callCtx(), new RecordingHost());
    // Let the first call reach the worker; the second stays queued behind it.
    await new Promise((r) => setImmediate(r));
    const queued = failure(engine.invoke("echo", 2, callCtx(), new RecordingHost()));
    await engine.stop();
    expect(await running).toBe(1);
    expect((await queued).code).toBe("stopped");
    expect(engine.workerAlive).toBe(false);
    const err = await failure(engine.invoke("echo", 1, callCtx(), new RecordingHost()));
    expect(err.message).toBe("guest: the engine is stopped");
  });
});
