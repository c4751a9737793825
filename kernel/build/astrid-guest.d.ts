/**
 * Types of the `astrid` global for capsule authors writing a QuickJS (JS/TS) capsule. The
 * global is the capsule's only door to the world: it has no `fs`, `process`, `fetch` or
 * clock of its own, and each call below goes through the sidecar's gate, tokens, budget and
 * audit. Mirrors sidecar/abi/host.ts (the HostApi) as the QuickJS prelude exposes it
 * (sidecar/engine/wasm/quickjs-prelude.ts). Reference it from a capsule with
 * `/// <reference path=".../astrid-guest.d.ts" />` or list it in the capsule's tsconfig.
 *
 * Bytes cross as Uint8Array. A failed host call rejects with an Error whose `name` is
 * "HostError" and whose `code` is an AstridHostErrorCode.
 */

export type AstridLogLevel = "debug" | "info" | "warn" | "error";

export type AstridHostErrorCode =
  | "denied"
  | "not_found"
  | "invalid"
  | "timeout"
  | "too_large"
  | "io"
  | "unavailable";

/** What a guest catches from a failed host call. */
export interface AstridHostError extends Error {
  readonly name: "HostError";
  readonly code: AstridHostErrorCode;
}

export interface AstridBusDelivery {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: Readonly<Record<string, string>>;
}

export type AstridEntryKind = "file" | "dir" | "symlink" | "other";

export interface AstridDirEntry {
  readonly name: string;
  readonly kind: AstridEntryKind;
}

export interface AstridFileStat {
  readonly kind: AstridEntryKind;
  readonly size: number;
  readonly mtimeMs: number;
}

export interface AstridHttpRequest {
  readonly method: string;
  readonly url: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: Uint8Array;
  readonly timeoutMs?: number;
}

export interface AstridHttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
}

export interface AstridSpawnRequest {
  readonly command: string;
  readonly args: readonly string[];
  readonly stdin?: Uint8Array;
  readonly timeoutMs?: number;
}

export interface AstridSpawnResult {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: Uint8Array;
  readonly stderr: Uint8Array;
  /** True when output was cut at the host's cap. */
  readonly truncated: boolean;
}

export interface AstridApprovalAsk {
  readonly kind: "tool" | "fs_read" | "fs_write" | "net" | "process" | "other";
  readonly target: string;
  readonly args?: unknown;
  readonly reason: string;
}

export type AstridApprovalOutcome =
  | { readonly granted: true; readonly scope: "once" | "session" | "workspace" | "always" }
  | { readonly granted: false; readonly reason: string };

export interface AstridGuest {
  /** `sys.log`; synchronous. */
  log(level: AstridLogLevel, message: string, fields?: Readonly<Record<string, unknown>>): void;
  readonly sys: {
    log(level: AstridLogLevel, message: string, fields?: Readonly<Record<string, unknown>>): void;
    /** Milliseconds since the epoch, from the host (Date.now() calls this too). */
    clockNow(): number;
    config(key: string): string | undefined;
    /** A secret declared under [env] with type = "secret". */
    secret(name: string): Promise<string>;
  };
  readonly ipc: {
    publish(subject: string, data: Uint8Array): Promise<void>;
    request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
    /** Returns a subscription handle for recv/unsubscribe. */
    subscribe(pattern: string): Promise<number>;
    /** Null when nothing arrived within timeoutMs. */
    recv(handle: number, timeoutMs: number): Promise<AstridBusDelivery | null>;
    unsubscribe(handle: number): Promise<void>;
  };
  /** Buckets scoped to the capsule, declared under capabilities.kv. */
  readonly kv: {
    get(bucket: string, key: string): Promise<Uint8Array | null>;
    set(bucket: string, key: string, value: Uint8Array): Promise<void>;
    delete(bucket: string, key: string): Promise<void>;
    list(bucket: string, prefix: string): Promise<string[]>;
  };
  /** Paths as in capabilities.fs_read / fs_write (`cwd://…`, `home://…`, `/…`). */
  readonly fs: {
    read(path: string): Promise<Uint8Array>;
    write(path: string, data: Uint8Array): Promise<void>;
    list(path: string): Promise<AstridDirEntry[]>;
    stat(path: string): Promise<AstridFileStat>;
  };
  readonly net: {
    httpRequest(req: AstridHttpRequest): Promise<AstridHttpResponse>;
  };
  readonly process: {
    spawn(req: AstridSpawnRequest): Promise<AstridSpawnResult>;
  };
  readonly approval: {
    request(ask: AstridApprovalAsk): Promise<AstridApprovalOutcome>;
  };
  /** Raw form: any `<interface>.<function>` of host.wit with one argument object. */
  call(op: string, args?: unknown): Promise<unknown>;
}

declare global {
  /** The host API of a QuickJS capsule; the only authority it has. */
  const astrid: AstridGuest;
}
