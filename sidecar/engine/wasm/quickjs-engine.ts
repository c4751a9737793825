/**
 * Runs one JS capsule (an ESM bundle) inside QuickJS compiled to WebAssembly: the sandbox of
 * security layer 1. The guest holds no reference to Node: everything it can reach is the
 * `astrid` global, whose functions go through the `HostApi` given with each call.
 *
 * Resource bounds, and the threat each stops:
 * - memory: the emscripten module gets a `WebAssembly.Memory` we create with a `maximum`
 *   (newVariant's `wasmMemory`), so a memory bomb fails inside the guest with "out of memory"
 *   instead of growing the Node process; QuickJS's own setMemoryLimit under-counts.
 * - stack: setMaxStackSize(≤ 256 KiB) — deeper limits overflow the emscripten stack and
 *   crash the host instead of throwing in the guest.
 * - time: an interrupt handler stops guest code past the per-call deadline; a host call in
 *   flight at the deadline is abandoned (its result is never delivered).
 * - host calls: a cap per call, so a guest cannot flood the audit log or the bus.
 * - output: a size cap, checked host-side before the string is copied out.
 * A fatal failure (out of memory, an emscripten abort) disposes the instance; the next call
 * gets a fresh one.
 */
import * as fs from "node:fs";
import { createRequire } from "node:module";
import syncVariantImport from "@jitl/quickjs-wasmfile-release-sync";
import {
  type CustomizeVariantOptions,
  newQuickJSWASMModuleFromVariant,
  newVariant,
  type QuickJSContext,
  type QuickJSDeferredPromise,
  type QuickJSHandle,
  type QuickJSRuntime,
  type QuickJSSyncVariant,
} from "quickjs-emscripten-core";
import { type CallContext, type HostApi, HostError } from "../../abi/host.js";
import { stringifyWithBytes } from "./bytes-json.js";
import {
  DEFAULT_MAX_HOST_CALLS,
  DEFAULT_MAX_INPUT_BYTES,
  DEFAULT_MAX_OUTPUT_BYTES,
  GuestCallError,
} from "./call-error.js";
import type { GuestEngine } from "./guest-engine.js";
import { callHostOp, callSyncHostOp } from "./host-ops.js";
import { QUICKJS_PRELUDE, RAW_HOST_GLOBAL } from "./quickjs-prelude.js";
import { SerialQueue } from "./serial-queue.js";
import { Wasm, type WasmMemory, type WasmModule } from "./webassembly.js";

// The package's CJS typings describe the default import as the module object; at runtime
// (ESM) it is the variant itself. Accept both.
const syncVariant: QuickJSSyncVariant =
  (syncVariantImport as unknown as { default?: QuickJSSyncVariant }).default ??
  (syncVariantImport as unknown as QuickJSSyncVariant);

const PAGE = 64 * 1024;
/** The QuickJS build declares 16 MiB of initial memory; the cap must leave room above it. */
export const QUICKJS_MIN_MEMORY_MB = 20;
/** Above this the emscripten stack (not QuickJS's check) overflows and takes the host down. */
export const QUICKJS_MAX_STACK_KB = 256;
/** Concurrent async host calls one guest call may have outstanding. */
export const MAX_HOST_CALLS_IN_FLIGHT = 32;

export interface QuickJsEngineOptions {
  /** One bundled JS file in ESM format; its exported functions are the handlers. */
  source: string;
  /** Maximum of the instance's linear memory, MiB (≥ 20). */
  memoryMb: number;
  /** QuickJS stack limit, KiB (1..256). */
  stackKb: number;
  /** Per-call deadline; the CallContext deadline applies too, whichever is earlier. */
  timeoutMs: number;
  /** Capsule name, used in error messages. */
  name: string;
  maxOutputBytes?: number;
  maxInputBytes?: number;
  maxHostCallsPerCall?: number;
}

/** The QuickJS binary is compiled once per process; each capsule instantiates its own copy. */
let compiledQuickJs: Promise<WasmModule> | undefined;
function quickJsWasm(): Promise<WasmModule> {
  compiledQuickJs ??= (async () => {
    const path = createRequire(import.meta.url).resolve("@jitl/quickjs-wasmfile-release-sync/wasm");
    return Wasm.compile(await fs.promises.readFile(path));
  })();
  return compiledQuickJs;
}

/** State of the call in progress; host functions refuse to act without one. */
interface ActiveCall {
  readonly host: HostApi;
  readonly deadline: number;
  hostCalls: number;
  limitHit: boolean;
  interrupted: boolean;
  finished: boolean;
  /** Set when delivering a host result failed inside the FFI (no memory for the copy). */
  fatal: unknown;
  readonly inFlight: Set<QuickJSDeferredPromise>;
  wake: () => void;
}

/** One instantiated QuickJS module with the bundle loaded. */
class QuickJsInstance {
  current: ActiveCall | undefined;
  private constructor(
    readonly memory: WasmMemory,
    readonly runtime: QuickJSRuntime,
    readonly ctx: QuickJSContext,
    readonly dispatch: QuickJSHandle,
    readonly handlers: QuickJSHandle,
    readonly maxHostCalls: number,
  ) {}

  static async create(opts: QuickJsEngineOptions): Promise<QuickJsInstance> {
    const memory = new Wasm.Memory({
      initial: 16 * 16,
      maximum: (opts.memoryMb * 1024 * 1024) / PAGE,
    });
    const wasmModule = await quickJsWasm();
    const mod = await newQuickJSWASMModuleFromVariant(
      newVariant(syncVariant, {
        wasmModule: wasmModule as unknown as CustomizeVariantOptions["wasmModule"],
        wasmMemory: memory as unknown as CustomizeVariantOptions["wasmMemory"],
      }),
    );
    if ((mod.getWasmMemory() as unknown) !== memory) {
      // Fail closed: without our memory the cap would silently not apply.
      throw new Error(`${opts.name}: QuickJS did not take the capped memory`);
    }
    const runtime = mod.newRuntime();
    runtime.setMaxStackSize(opts.stackKb * 1024);
    const ctx = runtime.newContext();
    let inst: QuickJsInstance | undefined;
    try {
      // While the bundle loads there is no call, hence no host to act for: refuse.
      const noCall = () => ({
        error: ctx.newError({ name: "HostError", message: "no call in progress" }),
      });
      const rawHost = ctx.newObject();
      ctx
        .newFunction("call", (...args) => (inst ? inst.hostCall(args) : noCall()))
        .consume((f) => ctx.setProp(rawHost, "call", f));
      ctx
        .newFunction("callSync", (...args) => (inst ? inst.hostCallSync(args) : noCall()))
        .consume((f) => ctx.setProp(rawHost, "callSync", f));
      ctx.setProp(ctx.global, RAW_HOST_GLOBAL, rawHost);
      rawHost.dispose();
      const dispatch = ctx.unwrapResult(ctx.evalCode(QUICKJS_PRELUDE, "astrid-prelude.js"));
      const deadline = Date.now() + opts.timeoutMs;
      runtime.setInterruptHandler(() => Date.now() > deadline);
      const loaded = ctx.evalCode(opts.source, `${opts.name}.js`, { type: "module" });
      runtime.removeInterruptHandler();
      if (loaded.error) {
        const err = describe(ctx.dump(loaded.error));
        loaded.error.dispose();
        dispatch.dispose();
        throw new Error(`${opts.name}: the bundle failed to load: ${err.message}`);
      }
      let handlers = loaded.value;
      const loadState = ctx.getPromiseState(handlers);
      if (!(loadState.type === "fulfilled" && loadState.notAPromise)) {
        // A module with top-level await evaluates to a promise for its exports; with no host
        // call allowed at load time, it settles from its own jobs or never.
        runtime.setInterruptHandler(() => Date.now() > deadline);
        const jobs = runtime.executePendingJobs();
        runtime.removeInterruptHandler();
        if (jobs.error) jobs.error.dispose();
        const state = ctx.getPromiseState(handlers);
        handlers.dispose();
        if (state.type !== "fulfilled") {
          dispatch.dispose();
          if (state.type === "rejected") state.error.dispose();
          throw new Error(`${opts.name}: the bundle's top-level await did not settle`);
        }
        handlers = state.value;
      }
      inst = new QuickJsInstance(
        memory,
        runtime,
        ctx,
        dispatch,
        handlers,
        opts.maxHostCallsPerCall ?? DEFAULT_MAX_HOST_CALLS,
      );
      return inst;
    } catch (err) {
      ctx.dispose();
      runtime.dispose();
      throw err;
    }
  }

  dispose(): void {
    // Best effort: after an emscripten abort the FFI may throw; the memory is freed by GC.
    try {
      this.dispatch.dispose();
      this.handlers.dispose();
      this.ctx.dispose();
      this.runtime.dispose();
    } catch {}
  }

  private admit(): ActiveCall | QuickJSHandle {
    const call = this.current;
    if (!call || call.finished) {
      return this.ctx.newError({ name: "HostError", message: "no call in progress" });
    }
    call.hostCalls++;
    if (call.hostCalls > this.maxHostCalls) {
      call.limitHit = true;
      return this.guestHostError(
        new HostError("denied", `more than ${this.maxHostCalls} host calls in one call`),
      );
    }
    return call;
  }

  hostCallSync(args: QuickJSHandle[]): QuickJSHandle | { error: QuickJSHandle } {
    const call = this.admit();
    if (!isCall(call)) return { error: call };
    try {
      const op = this.ctx.getString(args[0]!);
      const argJson = this.ctx.getString(args[1]!);
      const result = callSyncHostOp(call.host, op, JSON.parse(argJson));
      return this.ctx.newString(JSON.stringify(result ?? null));
    } catch (err) {
      return { error: this.guestHostError(err) };
    }
  }

  hostCall(args: QuickJSHandle[]): QuickJSHandle | { error: QuickJSHandle } {
    const call = this.admit();
    if (!isCall(call)) return { error: call };
    // Each call in flight holds a host-side copy of its arguments; without a bound a guest
    // could hand the host its whole memory again and again without waiting.
    if (call.inFlight.size >= MAX_HOST_CALLS_IN_FLIGHT) {
      return {
        error: this.guestHostError(
          new HostError("denied", `more than ${MAX_HOST_CALLS_IN_FLIGHT} host calls in flight`),
        ),
      };
    }
    let op: string;
    let parsed: unknown;
    try {
      op = this.ctx.getString(args[0]!);
      const bufs = args
        .slice(2)
        .map((h) => this.ctx.getArrayBuffer(h).consume((b) => b.value.slice()));
      parsed = JSON.parse(this.ctx.getString(args[1]!), (_k, v) =>
        isBufRef(v) ? bufs[v.$buf] : v,
      );
    } catch (err) {
      return { error: this.guestHostError(err) };
    }
    const deferred = this.ctx.newPromise();
    call.inFlight.add(deferred);
    const settle = (ok: boolean, value: unknown) => {
      call.inFlight.delete(deferred);
      // A result arriving after its call ended is dropped: delivering it would run guest code
      // under the next call's host and deadline.
      if (call.finished || !deferred.alive) return deferred.dispose();
      try {
        const h = ok ? this.guestResult(value) : this.guestHostError(value);
        if (ok) deferred.resolve(h);
        else deferred.reject(h);
        h.dispose();
      } catch (err) {
        call.fatal = err;
        deferred.dispose();
      }
      call.wake();
    };
    callHostOp(call.host, op, parsed).then(
      (v) => settle(true, v),
      (e) => settle(false, e),
    );
    return deferred.handle;
  }

  /** `[json, ...ArrayBuffers]` with each Uint8Array replaced by `{"$buf": i}`. */
  private guestResult(value: unknown): QuickJSHandle {
    const bufs: Uint8Array[] = [];
    const json = stringifyWithBytes(value, (b) => {
      bufs.push(b);
      return { $buf: bufs.length - 1 };
    });
    const arr = this.ctx.newArray();
    this.ctx.newString(json).consume((h) => this.ctx.setProp(arr, 0, h));
    bufs.forEach((b, i) => {
      const copy = b.slice().buffer;
      this.ctx.newArrayBuffer(copy).consume((h) => this.ctx.setProp(arr, i + 1, h));
    });
    return arr;
  }

  private guestHostError(err: unknown): QuickJSHandle {
    const he =
      err instanceof HostError
        ? err
        : new HostError("invalid", err instanceof Error ? err.message : String(err));
    const h = this.ctx.newError({ name: "HostError", message: he.message });
    this.ctx.newString(he.code).consume((c) => this.ctx.setProp(h, "code", c));
    return h;
  }
}

function isCall(v: ActiveCall | QuickJSHandle): v is ActiveCall {
  return "inFlight" in v;
}

function isBufRef(v: unknown): v is { $buf: number } {
  return (
    v !== null &&
    typeof v === "object" &&
    !Array.isArray(v) &&
    Object.keys(v).length === 1 &&
    Number.isInteger((v as { $buf?: unknown }).$buf)
  );
}

interface DumpedError {
  name: string;
  message: string;
  code: string | undefined;
}

function describe(dumped: unknown): DumpedError {
  if (dumped !== null && typeof dumped === "object") {
    const o = dumped as Record<string, unknown>;
    return {
      name: typeof o.name === "string" ? o.name : "Error",
      message: typeof o.message === "string" ? o.message : JSON.stringify(dumped),
      code: typeof o.code === "string" ? o.code : undefined,
    };
  }
  return { name: "Error", message: String(dumped), code: undefined };
}

export class QuickJsEngine implements GuestEngine {
  private instance: QuickJsInstance | undefined;
  private stopped = false;
  private readonly queue = new SerialQueue();
  private generationCount = 0;

  private constructor(private readonly opts: QuickJsEngineOptions) {}

  static async create(opts: QuickJsEngineOptions): Promise<QuickJsEngine> {
    if (!Number.isInteger(opts.memoryMb) || opts.memoryMb < QUICKJS_MIN_MEMORY_MB) {
      throw new Error(
        `${opts.name}: memoryMb must be an integer ≥ ${QUICKJS_MIN_MEMORY_MB}, got ${opts.memoryMb}`,
      );
    }
    if (
      !Number.isInteger(opts.stackKb) ||
      opts.stackKb < 1 ||
      opts.stackKb > QUICKJS_MAX_STACK_KB
    ) {
      throw new Error(
        `${opts.name}: stackKb must be an integer in 1..${QUICKJS_MAX_STACK_KB}, got ${opts.stackKb}`,
      );
    }
    if (!(opts.timeoutMs > 0)) {
      throw new Error(`${opts.name}: timeoutMs must be > 0, got ${opts.timeoutMs}`);
    }
    const engine = new QuickJsEngine(opts);
    await engine.ensureInstance();
    return engine;
  }

  /** How many instances have been created (1 + recreations after fatal errors). */
  get generation(): number {
    return this.generationCount;
  }

  /** Current size of the instance's linear memory; 0 when there is none. */
  get memoryBytes(): number {
    return this.instance?.memory.buffer.byteLength ?? 0;
  }

  get memoryMaxBytes(): number {
    return this.opts.memoryMb * 1024 * 1024;
  }

  /**
   * Calls the exported handler `fn` with `input` (JSON). Calls on one engine run one at a
   * time, in order: a QuickJS runtime has one interrupt deadline and one active host.
   */
  invoke(fn: string, input: unknown, ctx: CallContext, host: HostApi): Promise<unknown> {
    if (this.stopped) return Promise.reject(this.stoppedError());
    return this.queue.run(() => this.invokeNow(fn, input, ctx, host));
  }

  /**
   * Waits for the call in progress (bounded by its deadline), then frees the instance. Calls
   * queued behind it and later calls fail with "stopped".
   */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.queue.idle();
    this.instance?.dispose();
    this.instance = undefined;
  }

  private stoppedError(): GuestCallError {
    return new GuestCallError("stopped", `${this.opts.name}: the engine is stopped`);
  }

  private async ensureInstance(): Promise<QuickJsInstance> {
    if (this.instance) return this.instance;
    const inst = await QuickJsInstance.create(this.opts);
    this.instance = inst;
    this.generationCount++;
    return inst;
  }

  /**
   * Drops a failed instance without freeing the runtime: after an out-of-memory QuickJS's own
   * leak assertion aborts JS_FreeRuntime, and the whole linear memory goes with the instance
   * to the garbage collector anyway.
   */
  private discardInstance(): void {
    this.instance = undefined;
  }

  private async invokeNow(
    fn: string,
    input: unknown,
    callCtx: CallContext,
    host: HostApi,
  ): Promise<unknown> {
    if (this.stopped) throw this.stoppedError();
    const name = this.opts.name;
    const inputJson = JSON.stringify(input ?? null);
    const maxIn = this.opts.maxInputBytes ?? DEFAULT_MAX_INPUT_BYTES;
    if (Buffer.byteLength(inputJson) > maxIn) {
      throw new GuestCallError("too_large", `${name}.${fn}: input is larger than ${maxIn} bytes`);
    }
    const inst = await this.ensureInstance();
    const { ctx, runtime } = inst;
    const deadline = Math.min(Date.now() + this.opts.timeoutMs, callCtx.deadline);
    let wake: () => void = () => {};
    const call: ActiveCall = {
      host,
      deadline,
      hostCalls: 0,
      limitHit: false,
      interrupted: false,
      finished: false,
      fatal: undefined,
      inFlight: new Set(),
      wake: () => wake(),
    };
    inst.current = call;
    runtime.setInterruptHandler(() => {
      if (call.limitHit) return true;
      if (Date.now() > deadline) call.interrupted = true;
      return call.interrupted;
    });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
    });
    let promise: QuickJSHandle | undefined;
    try {
      const handler = ctx.getProp(inst.handlers, fn);
      if (ctx.typeof(handler) !== "function") {
        handler.dispose();
        throw new GuestCallError("no_handler", `${name} exports no handler named "${fn}"`);
      }
      const started = ctx
        .newString(inputJson)
        .consume((inputH) => ctx.callFunction(inst.dispatch, ctx.undefined, handler, inputH));
      handler.dispose();
      if (started.error) throw this.guestFailure(fn, call, started.error);
      promise = started.value;
      for (;;) {
        const jobs = runtime.executePendingJobs();
        if (jobs.error) throw this.guestFailure(fn, call, jobs.error);
        const state = ctx.getPromiseState(promise);
        if (state.type === "rejected") throw this.guestFailure(fn, call, state.error);
        if (state.type === "fulfilled") {
          const out = this.readOutput(fn, state.value);
          // Jobs the handler queued but did not wait for run now, under this call's host and
          // deadline, never under the next call's.
          const rest = runtime.executePendingJobs();
          if (rest.error) throw this.guestFailure(fn, call, rest.error);
          if (call.limitHit) throw this.limitError(fn);
          return out;
        }
        if (call.limitHit) throw this.limitError(fn);
        if (call.fatal !== undefined) throw call.fatal;
        if (call.inFlight.size === 0 && !runtime.hasPendingJob()) {
          throw new GuestCallError(
            "bad_guest",
            `${name}.${fn}: the handler's promise can never settle (no host call in flight)`,
          );
        }
        if (!runtime.hasPendingJob()) {
          await Promise.race([new Promise<void>((r) => (wake = r)), timedOut]);
        }
        if (Date.now() > deadline) {
          call.interrupted = true;
          throw new GuestCallError("timeout", `${name}.${fn}: deadline passed`);
        }
      }
    } catch (err) {
      if (err instanceof GuestCallError) {
        if (err.code === "out_of_memory") this.discardInstance();
        throw err;
      }
      // Not a guest exception: the FFI itself failed (emscripten abort, malloc failure in the
      // glue). The instance cannot be trusted; the next call gets a new one.
      this.discardInstance();
      throw new GuestCallError(
        "out_of_memory",
        `${name}.${fn}: the QuickJS instance failed (${err instanceof Error ? err.message : String(err)}); it will be recreated`,
      );
    } finally {
      clearTimeout(timer);
      call.finished = true;
      for (const d of call.inFlight) d.dispose();
      call.inFlight.clear();
      if (this.instance === inst) {
        inst.current = undefined;
        try {
          promise?.dispose();
          runtime.removeInterruptHandler();
        } catch {
          this.discardInstance();
        }
      }
    }
  }

  private limitError(fn: string): GuestCallError {
    const max = this.opts.maxHostCallsPerCall ?? DEFAULT_MAX_HOST_CALLS;
    return new GuestCallError(
      "host_call_limit",
      `${this.opts.name}.${fn}: more than ${max} host calls in one call`,
    );
  }

  private readOutput(fn: string, value: QuickJSHandle): unknown {
    const ctx = this.instance!.ctx;
    const name = this.opts.name;
    try {
      if (ctx.typeof(value) !== "string") {
        throw new GuestCallError("bad_guest", `${name}.${fn}: the output is not JSON-serialisable`);
      }
      const max = this.opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
      // The length check comes before the copy so a 100 MB string is refused, not copied.
      const length = ctx.getProp(value, "length").consume((h) => ctx.getNumber(h));
      if (length > max) {
        throw new GuestCallError("too_large", `${name}.${fn}: output is larger than ${max} bytes`);
      }
      const text = ctx.getString(value);
      if (Buffer.byteLength(text) > max) {
        throw new GuestCallError("too_large", `${name}.${fn}: output is larger than ${max} bytes`);
      }
      try {
        return JSON.parse(text);
      } catch {
        throw new GuestCallError("bad_guest", `${name}.${fn}: the output is not valid JSON`);
      }
    } finally {
      value.dispose();
    }
  }

  /** Maps a guest exception to the call's error; QuickJS reports its limits as InternalError. */
  private guestFailure(fn: string, call: ActiveCall, errHandle: QuickJSHandle): GuestCallError {
    const ctx = this.instance!.ctx;
    const err = describe(ctx.dump(errHandle));
    errHandle.dispose();
    const where = `${this.opts.name}.${fn}`;
    if (call.limitHit) return this.limitError(fn);
    if (call.interrupted) return new GuestCallError("timeout", `${where}: deadline passed`);
    if (err.name === "InternalError" && err.message === "out of memory") {
      return new GuestCallError(
        "out_of_memory",
        `${where}: out of memory (limit ${this.opts.memoryMb} MiB)`,
      );
    }
    if (err.name === "InternalError" && err.message === "stack overflow") {
      return new GuestCallError(
        "stack_overflow",
        `${where}: stack overflow (limit ${this.opts.stackKb} KiB)`,
      );
    }
    return new GuestCallError("guest_error", `${where}: ${err.name}: ${err.message}`, err.code);
  }
}
