/**
 * The host ABI: everything a capsule can do to the world, as one interface. A capsule has no
 * ambient authority (sandbox, layer 1): it holds no file descriptor, socket, clock or
 * environment of its own, and reaches all of them only through these calls, each of which the
 * sidecar's implementation puts through the manifest gate, the token check, the budget and,
 * when the mode asks for it, a person — and writes to the audit chain before acting.
 *
 * `host.wit` beside this file is the same ABI in WIT, kept ready for the component model.
 * Every value crossing the boundary is JSON-friendly (bytes as Uint8Array, which the engines
 * marshal), so the same interface serves QuickJS guests, core-WASM guests and tests.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";

/** Who a call is made for; fixed by the sidecar per invocation, never chosen by the guest. */
export interface CallContext {
  readonly callId: string;
  readonly session: string;
  readonly principal: string;
  readonly capsule: string;
  /** Capability token presented with the request that started this call, if any. */
  readonly token: string | undefined;
  /** Absolute deadline (ms since epoch); host calls fail with "timeout" after it. */
  readonly deadline: number;
}

export type HostErrorCode =
  | "denied"
  | "not_found"
  | "invalid"
  | "timeout"
  | "too_large"
  | "io"
  | "unavailable"
  /** A callee refused for budget (ipcCall): the session cannot afford the call. */
  | "budget";

/** The only error a guest sees from a host call: a code it can branch on and a clear message. */
export class HostError extends Error {
  override readonly name = "HostError";
  constructor(
    readonly code: HostErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface CallReply {
  readonly kind: string;
  readonly body: unknown;
}

export interface BusDelivery {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: Readonly<Record<string, string>>;
}

export interface DirEntry {
  readonly name: string;
  readonly kind: "file" | "dir" | "symlink" | "other";
}

export interface FileStat {
  readonly kind: "file" | "dir" | "symlink" | "other";
  readonly size: number;
  readonly mtimeMs: number;
}

export interface HttpRequest {
  readonly method: string;
  readonly url: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: Uint8Array;
  readonly timeoutMs?: number;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
}

/** What httpOpen answers once the status line and headers are in; the body follows by httpRead. */
export interface HttpStreamHead {
  /** Names the open stream in httpRead/httpClose; valid only within the call that opened it. */
  readonly handle: number;
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
}

/** One streamed fragment of a model turn, as the capsule hands it to the host. */
export interface StreamDelta {
  readonly text?: string;
  /** A fragment of a tool call's JSON arguments; `name` on the first fragment of a call. */
  readonly toolUse?: { readonly id: string; readonly name?: string; readonly inputJson: string };
  readonly done?: boolean;
}

export interface SpawnRequest {
  readonly command: string;
  readonly args: readonly string[];
  readonly stdin?: Uint8Array;
  readonly timeoutMs?: number;
}

export interface SpawnResult {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: Uint8Array;
  readonly stderr: Uint8Array;
  /** True when output was cut at the host's cap. */
  readonly truncated: boolean;
}

export interface ApprovalAsk {
  readonly kind: "tool" | "fs_read" | "fs_write" | "net" | "process" | "other";
  readonly target: string;
  readonly args?: unknown;
  readonly reason: string;
}

export type ApprovalOutcome =
  | { readonly granted: true; readonly scope: "once" | "session" | "workspace" | "always" }
  | { readonly granted: false; readonly reason: string };

/** Caps every implementation enforces (upstream Astrid's numbers where it had one). */
export const HOST_LIMITS = {
  maxFileBytes: 10 * 1024 * 1024,
  maxSubscriptions: 128,
  maxRecvTimeoutMs: 60_000,
  maxHttpBodyBytes: 10 * 1024 * 1024,
  /** Open streams plus requests in flight, per call. */
  maxConcurrentHttp: 4,
  /** Largest piece one httpRead returns; a bigger arrival is handed out in several reads. */
  maxHttpChunkBytes: 64 * 1024,
  /** Most deltas one call may stream (a runaway loop must not flood the caller's inbox). */
  maxStreamDeltas: 100_000,
  /** Longest sleep one call may ask for; the call's deadline caps it further. */
  maxSleepMs: 60_000,
  maxProcessOutputBytes: 1024 * 1024,
  maxKvValueBytes: 1024 * 1024,
  /** Largest text sha256 hashes in one call. */
  maxHashBytes: 16 * 1024 * 1024,
} as const;

export interface HostApi {
  // sys
  log(level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>): void;
  clockNow(): number;
  config(key: string): string | undefined;
  secret(name: string): Promise<string>;
  /** Waits `ms` (capped by maxSleepMs and the deadline): the guest has no timers of its own. */
  sleep(ms: number): Promise<void>;
  /**
   * Lowercase hex SHA-256 of `text`'s UTF-8 bytes. Pure computation, so no layer is asked;
   * an interpreter hashes ~1 µs a byte, the host's native code ~1 ns (a cache keys on it).
   */
  sha256(text: string): string;
  /**
   * Publishes an `llm.delta` (seq numbered by the host) to the stream inbox the caller named in
   * its request. Resolves false when the request named none (streaming is then a no-op).
   */
  streamDelta(delta: StreamDelta): Promise<boolean>;
  // ipc
  ipcPublish(subject: string, data: Uint8Array): Promise<void>;
  ipcRequest(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  ipcSubscribe(pattern: string): Promise<number>;
  ipcRecv(handle: number, timeoutMs: number): Promise<BusDelivery | null>;
  ipcUnsubscribe(handle: number): Promise<void>;
  /**
   * A protocol request: the host wraps `body` in an envelope of message kind `kind` for this
   * call's session and principal (the guest cannot claim another), sends it with the call's
   * capability token, and returns the reply's kind and body. An `error` reply is thrown as a
   * HostError with the callee's code and message.
   */
  ipcCall(subject: string, kind: string, body: unknown, timeoutMs: number): Promise<CallReply>;
  /** Publishes a `session.event` body to this call's session event subject. */
  sessionEmit(event: unknown): Promise<void>;
  // kv (buckets scoped to the capsule)
  kvGet(bucket: string, key: string): Promise<Uint8Array | null>;
  kvSet(bucket: string, key: string, value: Uint8Array): Promise<void>;
  kvDelete(bucket: string, key: string): Promise<void>;
  kvList(bucket: string, prefix: string): Promise<string[]>;
  // fs
  fsRead(path: string): Promise<Uint8Array>;
  fsWrite(path: string, data: Uint8Array): Promise<void>;
  fsList(path: string): Promise<DirEntry[]>;
  fsStat(path: string): Promise<FileStat>;
  // net
  httpRequest(req: HttpRequest): Promise<HttpResponse>;
  /** Sends the request and resolves at the response head; the body is read with httpRead. */
  httpOpen(req: HttpRequest): Promise<HttpStreamHead>;
  /**
   * The body as it arrives: everything received since the last read (at most maxHttpChunkBytes),
   * waiting up to `timeoutMs` for something; null at the end of the body, an empty array when
   * nothing came in time. A body cut before its end throws HostError("io"), never null.
   */
  httpRead(handle: number, timeoutMs: number): Promise<Uint8Array | null>;
  httpClose(handle: number): Promise<void>;
  // process
  processSpawn(req: SpawnRequest): Promise<SpawnResult>;
  // approval
  approvalRequest(ask: ApprovalAsk): Promise<ApprovalOutcome>;
}
