/**
 * The worker thread that runs one core-WASM guest. It is started from a string (`eval: true`)
 * so it needs no loader for TypeScript and no file on disk; the function below is written
 * self-contained (no imports, `require` only) and serialised with Function.prototype.toString.
 *
 * Why a worker: a guest stuck in a loop holds its thread; only terminating the thread stops
 * it, and that must not be the sidecar's main thread.
 *
 * Host calls: the guest's `astrid.call` import is synchronous, the HostApi is async. The
 * worker posts the request to the main thread and blocks on Atomics.wait over a shared flag;
 * the main thread runs the call, posts the result on a dedicated port and notifies; the worker
 * then takes the result synchronously with receiveMessageOnPort.
 */

/** Messages from the main thread. */
export type ToWorker = { type: "invoke"; fn: string; input: string };

/** Messages to the main thread. */
export type FromWorker =
  | { type: "ready" }
  | { type: "host"; op: string; args: string }
  | { type: "done"; ok: true; output: string }
  | { type: "done"; ok: false; code: string; message: string };

export interface CoreWorkerData {
  module: unknown;
  flag: SharedArrayBuffer;
  hostPort: unknown;
  maxOutputBytes: number;
  maxHostCalls: number;
  maxMemoryBytes: number;
}

function coreWorkerMain(): void {
  const wt = require("node:worker_threads");
  const data = wt.workerData as CoreWorkerData;
  const parent = wt.parentPort;
  const flag = new Int32Array(data.flag);
  const enc = new TextEncoder();
  const dec = new TextDecoder("utf-8", { fatal: true });

  interface GuestExports {
    memory: { buffer: ArrayBuffer };
    alloc: (len: number) => number;
    dealloc?: (ptr: number, len: number) => void;
    [fn: string]: unknown;
  }
  let guest: GuestExports | undefined;
  let hostCalls = 0;
  let limitHit = false;

  class HostCallLimit extends Error {}
  class BadGuest extends Error {}

  const bytesAt = (ptr: number, len: number): Uint8Array => {
    const mem = guest!.memory.buffer;
    if (ptr < 0 || len < 0 || ptr + len > mem.byteLength) {
      throw new BadGuest(`pointer ${ptr}+${len} is outside the guest's memory`);
    }
    return new Uint8Array(mem, ptr, len);
  };

  const writeToGuest = (text: string): bigint => {
    const bytes = enc.encode(text);
    const ptr = guest!.alloc(bytes.length) >>> 0;
    bytesAt(ptr, bytes.length).set(bytes);
    return (BigInt(ptr) << 32n) | BigInt(bytes.length);
  };

  const call = (opPtr: number, opLen: number, argsPtr: number, argsLen: number): bigint => {
    hostCalls++;
    if (hostCalls > data.maxHostCalls) {
      limitHit = true;
      // Thrown through the guest: WASM cannot catch it, so a flood ends here.
      throw new HostCallLimit();
    }
    const op = dec.decode(bytesAt(opPtr >>> 0, opLen >>> 0));
    const args = dec.decode(bytesAt(argsPtr >>> 0, argsLen >>> 0));
    Atomics.store(flag, 0, 0);
    parent.postMessage({ type: "host", op, args });
    // No timeout here: the main thread terminates this worker at the call's deadline.
    Atomics.wait(flag, 0, 0);
    const reply = wt.receiveMessageOnPort(data.hostPort);
    if (!reply) throw new BadGuest("host reply missing");
    return writeToGuest(reply.message as string);
  };

  const WA = (
    globalThis as unknown as {
      WebAssembly: { Instance: new (m: unknown, imports: unknown) => { exports: unknown } };
    }
  ).WebAssembly;
  const instantiate = (): void => {
    const inst = new WA.Instance(data.module, { astrid: { call } });
    guest = inst.exports as unknown as GuestExports;
  };

  const done = (msg: FromWorker) => parent.postMessage(msg);

  const invoke = (fn: string, input: string): FromWorker => {
    if (!guest) instantiate();
    const g = guest!;
    const handler = fn === "alloc" || fn === "dealloc" || fn === "memory" ? undefined : g[fn];
    if (typeof handler !== "function") {
      return {
        type: "done",
        ok: false,
        code: "no_handler",
        message: `exports no handler named "${fn}"`,
      };
    }
    hostCalls = 0;
    limitHit = false;
    try {
      const inBytes = enc.encode(input);
      const inPtr = g.alloc(inBytes.length) >>> 0;
      bytesAt(inPtr, inBytes.length).set(inBytes);
      const packed = BigInt.asUintN(64, handler(inPtr, inBytes.length) as bigint);
      const outPtr = Number(packed >> 32n);
      const outLen = Number(packed & 0xffffffffn);
      // The length is checked before the bytes are copied out of the guest.
      if (outLen > data.maxOutputBytes) {
        return {
          type: "done",
          ok: false,
          code: "too_large",
          message: `output is larger than ${data.maxOutputBytes} bytes`,
        };
      }
      const output = dec.decode(bytesAt(outPtr, outLen));
      // The guest owns its memory; `dealloc` (optional) lets it free the call's buffers.
      if (typeof g.dealloc === "function") {
        g.dealloc(inPtr, inBytes.length);
        g.dealloc(outPtr, outLen);
      }
      return { type: "done", ok: true, output };
    } catch (err) {
      // After a trap the guest's own state (allocator, globals) cannot be trusted.
      guest = undefined;
      if (limitHit) {
        return { type: "done", ok: false, code: "host_call_limit", message: "host call limit" };
      }
      const message = err instanceof Error ? err.message : String(err);
      if (err instanceof BadGuest || err instanceof TypeError) {
        return { type: "done", ok: false, code: "bad_guest", message };
      }
      if (err instanceof RangeError && /call stack/i.test(message)) {
        return { type: "done", ok: false, code: "stack_overflow", message: "stack overflow" };
      }
      const mem = g.memory.buffer.byteLength;
      if (mem >= data.maxMemoryBytes) {
        return {
          type: "done",
          ok: false,
          code: "out_of_memory",
          message: `trap at its memory maximum: ${message}`,
        };
      }
      return { type: "done", ok: false, code: "guest_error", message: `trap: ${message}` };
    }
  };

  parent.on("message", (msg: ToWorker) => {
    if (msg.type === "invoke") done(invoke(msg.fn, msg.input));
  });
  instantiate();
  done({ type: "ready" });
}

/**
 * Source of the worker. `__name` is defined because some TypeScript transpilers (esbuild
 * with keepNames, used by tsx and vitest) wrap named functions in calls to it.
 */
export const CORE_WORKER_SOURCE = `"use strict";
var __name = (f) => f;
(${coreWorkerMain.toString()})();
`;
