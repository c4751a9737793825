/**
 * Why one call into a WASM guest failed. The sidecar turns these into the error reply of the
 * request; the code is stable so callers can branch on it, the message says what happened.
 */
export type GuestCallErrorCode =
  /** The per-call deadline passed (guest code interrupted or worker terminated). */
  | "timeout"
  /** The guest's linear memory hit its maximum. */
  | "out_of_memory"
  /** The guest recursed past its stack limit. */
  | "stack_overflow"
  /** The guest threw (QuickJS) or trapped (core WASM: unreachable, out-of-bounds, …). */
  | "guest_error"
  /** The output (or an input) is larger than the engine's cap. */
  | "too_large"
  /** The guest made more host calls in one call than allowed. */
  | "host_call_limit"
  /** The function asked for is not a handler the guest exports. */
  | "no_handler"
  /** The guest broke the calling convention (bad JSON, bad pointers, never settled). */
  | "bad_guest"
  /** The engine was stopped. */
  | "stopped";

export class GuestCallError extends Error {
  override readonly name = "GuestCallError";
  constructor(
    readonly code: GuestCallErrorCode,
    message: string,
    /** For guest_error: the code the guest attached (e.g. an uncaught HostError's code). */
    readonly guestCode?: string,
  ) {
    super(message);
  }
}

export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;
export const DEFAULT_MAX_INPUT_BYTES = 1024 * 1024;
/** Bounds a host-call flood (1e6 log calls) inside one call; each call costs the host work. */
export const DEFAULT_MAX_HOST_CALLS = 10_000;
