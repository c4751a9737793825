/**
 * What the sidecar needs from a WASM engine, whichever runs the capsule: QuickJsEngine for
 * JS bundles, CoreWasmEngine for compiled modules.
 */
import type { CallContext, HostApi } from "../../abi/host.js";

export interface GuestEngine {
  /** Calls handler `fn` with JSON `input`; rejects with GuestCallError. Calls run in order. */
  invoke(fn: string, input: unknown, ctx: CallContext, host: HostApi): Promise<unknown>;
  /** Lets the call in progress finish, frees the instance; later calls fail "stopped". */
  stop(): Promise<void>;
}
