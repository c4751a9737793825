/**
 * Runs one compiled capsule (a core WASM module from AssemblyScript, C or Rust) with the same
 * host ABI as QuickJS guests, in a worker thread that is terminated at the call's deadline.
 *
 * Guest calling convention (JSON in linear memory; bytes as `{"$b64": "..."}`):
 * - exports `memory` (declared maximum ≤ memoryMb — checked before instantiation),
 *   `alloc(len: i32) -> i32`, and handlers `(ptr: i32, len: i32) -> i64` returning
 *   `ptr << 32 | len` of the JSON output;
 * - imports only `astrid.call(op_ptr, op_len, args_ptr, args_len) -> i64`: op is e.g.
 *   "fs.read", args a JSON object; the result (written through the guest's alloc) is
 *   `{"ok": value}` or `{"error": {"code", "message"}}`.
 *
 * Failure isolation: deadline → worker terminated and recreated on the next call; trap → that
 * call fails and the guest is re-instantiated inside the worker; worker crash (heap limit) →
 * recreated. The main thread never runs guest code.
 */
import { MessageChannel, type MessagePort, Worker } from "node:worker_threads";
import { type CallContext, type HostApi, HostError } from "../../abi/host.js";
import { reviveB64, stringifyWithBytes, toB64Ref } from "./bytes-json.js";
import {
  DEFAULT_MAX_HOST_CALLS,
  DEFAULT_MAX_INPUT_BYTES,
  DEFAULT_MAX_OUTPUT_BYTES,
  GuestCallError,
  type GuestCallErrorCode,
} from "./call-error.js";
import { type CheckedCoreModule, checkCoreModule } from "./core-module-check.js";
import { CORE_WORKER_SOURCE, type CoreWorkerData, type FromWorker } from "./core-worker.js";
import type { GuestEngine } from "./guest-engine.js";
import { callHostOp } from "./host-ops.js";
import { SerialQueue } from "./serial-queue.js";

export interface CoreWasmEngineOptions {
  /** The module's bytes (the capsule's [wasm].module). */
  wasm: Uint8Array;
  /** Budget for the guest's linear memory, MiB; the module's declared maximum must fit. */
  memoryMb: number;
  timeoutMs: number;
  name: string;
  maxOutputBytes?: number;
  maxInputBytes?: number;
  maxHostCallsPerCall?: number;
  /** V8 heap of the worker (its JS, not the guest's linear memory), MiB. Default 32. */
  workerHeapMb?: number;
}

interface RunningWorker {
  readonly worker: Worker;
  readonly hostPort: MessagePort;
  readonly flag: Int32Array;
  /** Set while a call is in progress; receives the worker's messages and its death. */
  onMessage: ((msg: FromWorker) => void) | undefined;
  onDeath: ((err: GuestCallError) => void) | undefined;
  dead: boolean;
}

export class CoreWasmEngine implements GuestEngine {
  private running: RunningWorker | undefined;
  private stopped = false;
  private readonly queue = new SerialQueue();
  private workersStarted = 0;

  private constructor(
    private readonly opts: CoreWasmEngineOptions,
    private readonly checked: CheckedCoreModule,
  ) {}

  static async create(opts: CoreWasmEngineOptions): Promise<CoreWasmEngine> {
    if (!(opts.memoryMb > 0)) {
      throw new Error(`${opts.name}: memoryMb must be > 0, got ${opts.memoryMb}`);
    }
    if (!(opts.timeoutMs > 0)) {
      throw new Error(`${opts.name}: timeoutMs must be > 0, got ${opts.timeoutMs}`);
    }
    const checked = await checkCoreModule(opts.name, opts.wasm, opts.memoryMb);
    const engine = new CoreWasmEngine(opts, checked);
    await engine.ensureWorker();
    return engine;
  }

  /** Exported handler names. */
  get handlers(): readonly string[] {
    return this.checked.handlers;
  }

  /** How many worker threads have been started (1 + restarts after deadline or crash). */
  get generation(): number {
    return this.workersStarted;
  }

  /** Whether a worker thread is alive right now. */
  get workerAlive(): boolean {
    return this.running !== undefined && !this.running.dead;
  }

  invoke(fn: string, input: unknown, ctx: CallContext, host: HostApi): Promise<unknown> {
    if (this.stopped) return Promise.reject(this.stoppedError());
    return this.queue.run(() => this.invokeNow(fn, input, ctx, host));
  }

  /** Waits for the call in progress, then terminates the worker; later calls fail "stopped". */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.queue.idle();
    await this.killWorker();
  }

  private stoppedError(): GuestCallError {
    return new GuestCallError("stopped", `${this.opts.name}: the engine is stopped`);
  }

  private async killWorker(): Promise<void> {
    const r = this.running;
    this.running = undefined;
    if (r && !r.dead) {
      r.dead = true;
      r.hostPort.close();
      await r.worker.terminate();
    }
  }

  private async ensureWorker(): Promise<RunningWorker> {
    if (this.running && !this.running.dead) return this.running;
    const { port1, port2 } = new MessageChannel();
    const flagBuf = new SharedArrayBuffer(4);
    const data: CoreWorkerData = {
      module: this.checked.module,
      flag: flagBuf,
      hostPort: port2,
      maxOutputBytes: this.opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES,
      maxHostCalls: this.opts.maxHostCallsPerCall ?? DEFAULT_MAX_HOST_CALLS,
      maxMemoryBytes: this.checked.maxMemoryPages * 64 * 1024,
    };
    const worker = new Worker(CORE_WORKER_SOURCE, {
      eval: true,
      workerData: data,
      transferList: [port2],
      resourceLimits: {
        maxOldGenerationSizeMb: this.opts.workerHeapMb ?? 32,
        maxYoungGenerationSizeMb: 8,
        stackSizeMb: 4,
      },
    });
    const r: RunningWorker = {
      worker,
      hostPort: port1,
      flag: new Int32Array(flagBuf),
      onMessage: undefined,
      onDeath: undefined,
      dead: false,
    };
    this.workersStarted++;
    const name = this.opts.name;
    const die = (code: GuestCallErrorCode, message: string) => {
      if (r.dead) return;
      r.dead = true;
      port1.close();
      if (this.running === r) this.running = undefined;
      r.onDeath?.(new GuestCallError(code, `${name}: ${message}`));
    };
    worker.on("error", (err: Error & { code?: string }) => {
      if (err.code === "ERR_WORKER_OUT_OF_MEMORY")
        die("out_of_memory", "the worker ran out of heap");
      else die("guest_error", `the worker failed: ${err.message}`);
    });
    worker.on("exit", (code) => die("guest_error", `the worker exited (code ${code})`));
    worker.on("message", (msg: FromWorker) => r.onMessage?.(msg));
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        // A start function that never returns would otherwise hang create() forever.
        timer = setTimeout(() => {
          r.dead = true;
          port1.close();
          void worker.terminate();
          reject(new GuestCallError("timeout", `${name}: instantiating the guest timed out`));
        }, this.opts.timeoutMs);
        r.onMessage = (msg) => {
          if (msg.type === "ready") resolve();
        };
        r.onDeath = (err) =>
          reject(new GuestCallError(err.code, `${err.message} while instantiating the guest`));
      });
    } finally {
      clearTimeout(timer);
      r.onMessage = undefined;
      r.onDeath = undefined;
    }
    this.running = r;
    return r;
  }

  private async invokeNow(
    fn: string,
    input: unknown,
    callCtx: CallContext,
    host: HostApi,
  ): Promise<unknown> {
    if (this.stopped) throw this.stoppedError();
    const where = `${this.opts.name}.${fn}`;
    const inputJson = stringifyWithBytes(input, toB64Ref);
    const maxIn = this.opts.maxInputBytes ?? DEFAULT_MAX_INPUT_BYTES;
    if (Buffer.byteLength(inputJson) > maxIn) {
      throw new GuestCallError("too_large", `${where}: input is larger than ${maxIn} bytes`);
    }
    if (!this.checked.handlers.includes(fn)) {
      throw new GuestCallError("no_handler", `${this.opts.name} exports no handler named "${fn}"`);
    }
    const deadline = Math.min(Date.now() + this.opts.timeoutMs, callCtx.deadline);
    const r = await this.ensureWorker();
    let finished = false;
    let timer: NodeJS.Timeout | undefined;
    try {
      const output = await new Promise<string>((resolve, reject) => {
        timer = setTimeout(
          () => {
            // The only way to stop a guest that is looping (or blocked in a host call): end
            // its thread. The next call starts a new worker.
            void this.killWorker();
            reject(new GuestCallError("timeout", `${where}: deadline passed`));
          },
          Math.max(0, deadline - Date.now()),
        );
        r.onDeath = reject;
        r.onMessage = (msg) => {
          if (msg.type === "host") {
            void this.answerHostCall(r, host, msg.op, msg.args, () => finished);
          } else if (msg.type === "done") {
            if (msg.ok) resolve(msg.output);
            else
              reject(
                new GuestCallError(msg.code as GuestCallErrorCode, `${where}: ${msg.message}`),
              );
          }
        };
        r.worker.postMessage({ type: "invoke", fn, input: inputJson });
      });
      try {
        return JSON.parse(output, reviveB64);
      } catch {
        throw new GuestCallError("bad_guest", `${where}: the output is not valid JSON`);
      }
    } catch (err) {
      if (err instanceof GuestCallError && err.code === "host_call_limit") {
        const max = this.opts.maxHostCallsPerCall ?? DEFAULT_MAX_HOST_CALLS;
        throw new GuestCallError(
          "host_call_limit",
          `${where}: more than ${max} host calls in one call`,
        );
      }
      throw err;
    } finally {
      finished = true;
      clearTimeout(timer);
      r.onMessage = undefined;
      r.onDeath = undefined;
    }
  }

  /** Runs one host call for the blocked worker and wakes it with the JSON result. */
  private async answerHostCall(
    r: RunningWorker,
    host: HostApi,
    op: string,
    argsJson: string,
    finished: () => boolean,
  ): Promise<void> {
    let reply: string;
    try {
      let args: unknown;
      try {
        args = JSON.parse(argsJson, reviveB64);
      } catch {
        throw new HostError("invalid", `${op}: arguments are not valid JSON`);
      }
      const value = await callHostOp(host, op, args);
      reply = stringifyWithBytes({ ok: value ?? null }, toB64Ref);
    } catch (err) {
      const he = err instanceof HostError ? err : new HostError("io", `${op} failed in the host`);
      reply = JSON.stringify({ error: { code: he.code, message: he.message } });
    }
    // A result for a call that already ended (deadline) goes nowhere: its worker is gone.
    if (finished() || r.dead) return;
    r.hostPort.postMessage(reply);
    Atomics.store(r.flag, 0, 1);
    Atomics.notify(r.flag, 0);
  }
}
