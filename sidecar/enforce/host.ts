/**
 * The host ABI as the sidecar serves it: every function a capsule can call, each one put
 * through the layers (gate → token → approval, all audited) before it touches anything. One
 * instance serves one call, so who the call is for (session, principal, token, deadline) is
 * fixed by the sidecar and never chosen by the guest.
 */
import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import type { BusMessage, Subscription } from "../../core/bus/bus.js";
import { assertPublishSubject } from "../../core/bus/subject.js";
import { decode, encode, type ProtocolError } from "../../core/protocol/envelope.js";
import type { ErrorReply } from "../../core/protocol/messages.js";
import {
  isStreamInbox,
  type KindName,
  MESSAGE_KINDS,
  STREAM_INBOX_PATTERN,
  subjects,
} from "../../core/protocol/topics.js";
import { allow, type Decision, deny } from "../../core/security/decision.js";
import type { ManifestGate } from "../../core/security/gate/gate.js";
import type { DnsLookup } from "../../core/security/gate/net.js";
import {
  type ApprovalAsk,
  type ApprovalOutcome,
  type BusDelivery,
  type CallContext,
  type CallReply,
  type DirEntry,
  type FileStat,
  HOST_LIMITS,
  type HostApi,
  HostError,
  type HostErrorCode,
  type HttpRequest,
  type HttpResponse,
  type HttpStreamHead,
  type LogLevel,
  type SpawnRequest,
  type SpawnResult,
  type StreamDelta,
} from "../abi/host.js";
import { hostSha256 } from "../abi/sha256.js";
import { type CapsuleBus, IpcDeniedError } from "./capsule-bus.js";
import type { DecisionLog } from "./decision-log.js";
import type { KvStore } from "./kv.js";
import type { CapsuleLayers } from "./layers.js";

export interface HostDeps {
  readonly layers: CapsuleLayers;
  readonly gate: ManifestGate;
  readonly bus: CapsuleBus;
  readonly log: DecisionLog;
  readonly kv: KvStore;
  /** Buckets the manifest declares (`kv = [...]`). */
  readonly kvBuckets: readonly string[];
  /** Declared non-secret env values (`[env.X] type = "string"`), with defaults applied. */
  readonly config: Readonly<Record<string, string>>;
  /** Declared secret values; only names the manifest declares are ever put here. */
  readonly secrets: Readonly<Record<string, string>>;
  readonly workspace: string;
  readonly home: string;
  readonly logger: (level: LogLevel, message: string, fields: Record<string, unknown>) => void;
  /** DNS for http requests; tests pass their own resolver. */
  readonly lookup?: DnsLookup;
  /**
   * The stream inbox the request being served named (`LlmChatRequest.stream`), and a publish
   * that bypasses the capsule's IPC ACL for that one subject: streamDelta checks and audits it.
   */
  readonly stream?: {
    readonly subject: string;
    readonly publish: (subject: string, data: Uint8Array) => void;
  };
}

/** One response body being read by the guest, piece by piece. */
interface HttpStream {
  readonly destroy: () => void;
  readonly resume: () => void;
  readonly queue: Buffer[];
  queued: number;
  paused: boolean;
  ended: boolean;
  failure: HostError | undefined;
  /** Set while a guest waits in httpRead. */
  wake: (() => void) | undefined;
}

/** Bytes a stream buffers before the socket is paused (a slow guest must not grow it). */
const HTTP_STREAM_HIGH_WATER = 1024 * 1024;

interface HostSubscription {
  sub: Subscription | undefined;
  readonly queue: BusDelivery[];
  /** Set while a guest waits in ipcRecv. */
  wake: (() => void) | undefined;
}

/** Waits until `wake()` is called (something arrived) or `ms` pass, whichever is first. */
function waitForWake(s: { wake: (() => void) | undefined }, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      s.wake = undefined;
      resolve();
    };
    const timer = setTimeout(done, ms);
    s.wake = done;
  });
}

/** A callee's error code as the guest sees it; internal faults are the callee's io. */
const CALLEE_CODE: Record<ErrorReply["code"], HostErrorCode> = {
  denied: "denied",
  invalid: "invalid",
  not_found: "not_found",
  timeout: "timeout",
  budget: "budget",
  unavailable: "unavailable",
  too_large: "too_large",
  internal: "io",
};

const FILE_KIND = (s: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean }) =>
  s.isFile() ? "file" : s.isDirectory() ? "dir" : s.isSymbolicLink() ? "symlink" : "other";

function flatHeaders(h: http.IncomingHttpHeaders): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : v;
  }
  return headers;
}

function denied(d: Decision): HostError {
  return new HostError("denied", d.allowed ? "denied" : `${d.layer}: ${d.reason}`);
}

export class EnforcedHost implements HostApi {
  private readonly subs = new Map<number, HostSubscription>();
  private nextHandle = 1;
  private httpInFlight = 0;
  private readonly streams = new Map<number, HttpStream>();
  private nextStream = 1;
  private streamGate: Promise<void> | undefined;
  private deltaSeq = 0;

  constructor(
    private readonly d: HostDeps,
    private readonly ctx: CallContext,
  ) {}

  /** Drops the call's subscriptions; the sidecar calls it when the call ends. */
  dispose(): void {
    for (const s of this.subs.values()) {
      s.sub?.unsubscribe();
      s.wake?.();
    }
    this.subs.clear();
    // A stream the guest left open must not outlive its call: the connection would keep
    // reading on the host's behalf with nobody to hold its bytes to the call's limits.
    for (const handle of [...this.streams.keys()]) this.closeStream(handle);
  }

  private remainingMs(cap: number): number {
    const left = this.ctx.deadline - Date.now();
    if (left <= 0) throw new HostError("timeout", "the call's deadline has passed");
    return Math.min(left, cap);
  }

  // ── sys ──────────────────────────────────────────────────────────────────────────────────

  log(level: LogLevel, message: string, fields: Readonly<Record<string, unknown>> = {}): void {
    this.d.logger(level, String(message).slice(0, 8192), { ...fields, callId: this.ctx.callId });
  }

  clockNow(): number {
    return Date.now();
  }

  sha256(text: string): string {
    return hostSha256(text);
  }

  config(key: string): string | undefined {
    return Object.hasOwn(this.d.config, key) ? this.d.config[key] : undefined;
  }

  async secret(name: string): Promise<string> {
    const gate = this.d.gate.env.checkEnv(name);
    const decision =
      gate.allowed && !this.d.gate.env.isSecret(name)
        ? deny("gate", `"${name}" is declared as a string, not a secret; read it with config()`)
        : gate;
    const d = await this.d.log.record(this.ctx, decision, "secret.read", name);
    if (!d.allowed) throw denied(d);
    const value = this.d.secrets[name];
    if (value === undefined) throw new HostError("not_found", `secret "${name}" is not set`);
    return value;
  }

  async sleep(ms: number): Promise<void> {
    const want = Math.min(Math.max(0, ms), HOST_LIMITS.maxSleepMs);
    // A wait that would end past the deadline fails now, rather than holding the call until
    // the deadline and failing then.
    if (Date.now() + want >= this.ctx.deadline) {
      throw new HostError("timeout", `sleeping ${want} ms would pass the call's deadline`);
    }
    await new Promise((resolve) => setTimeout(resolve, want));
  }

  /**
   * The stream inbox is the one subject a capsule may publish to outside its ipc_publish: like a
   * reply subject, the requester chose it and named it in the request, so granting it in every
   * provider's manifest (`_INBOX.>`) would let any provider write into every caller's replies.
   * Only that exact subject, only of the stream-inbox form (never a reply subject), and only
   * `llm.delta` messages the host builds.
   */
  async streamDelta(delta: StreamDelta): Promise<boolean> {
    const stream = this.d.stream;
    if (!stream) return false;
    this.streamGate ??= this.checkStream(stream.subject);
    await this.streamGate;
    if (this.deltaSeq >= HOST_LIMITS.maxStreamDeltas) {
      throw new HostError("too_large", `at most ${HOST_LIMITS.maxStreamDeltas} deltas per call`);
    }
    let wire: Uint8Array;
    try {
      wire = encode(
        "llm.delta",
        { seq: this.deltaSeq, ...delta },
        { session: this.ctx.session, principal: this.ctx.principal, capsule: this.ctx.capsule },
      );
    } catch (err) {
      const e = err as ProtocolError;
      throw new HostError(e.code === "too_large" ? "too_large" : "invalid", e.message);
    }
    stream.publish(stream.subject, wire);
    this.deltaSeq++;
    return true;
  }

  private async checkStream(subject: string): Promise<void> {
    let decision: Decision;
    try {
      assertPublishSubject(subject);
      decision = isStreamInbox(subject)
        ? allow("acl", "the stream inbox the request named")
        : deny(
            "acl",
            `stream subject "${subject}" is not a stream inbox (${STREAM_INBOX_PATTERN}); deltas go to inboxes only`,
          );
    } catch (err) {
      decision = deny("acl", `stream subject refused: ${(err as Error).message}`);
    }
    const d = await this.d.log.record(this.ctx, decision, "llm.stream", subject);
    if (!d.allowed) throw denied(d);
  }

  // ── ipc ──────────────────────────────────────────────────────────────────────────────────

  private async viaBus<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (err instanceof IpcDeniedError) throw new HostError("denied", `acl: ${err.message}`);
      if (err instanceof HostError) throw err;
      const e = err as Error;
      if (e.name === "NoRespondersError") throw new HostError("unavailable", e.message);
      if (e.name === "RequestTimeoutError") throw new HostError("timeout", e.message);
      if (e.name === "PayloadTooLargeError") throw new HostError("too_large", e.message);
      throw new HostError("io", e.message);
    }
  }

  async ipcPublish(subject: string, data: Uint8Array): Promise<void> {
    await this.viaBus(() => this.d.bus.publish(this.ctx, subject, data));
  }

  async ipcRequest(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    const ms = this.remainingMs(Math.max(1, timeoutMs));
    // The call's capability token travels with the requests it makes, so a tool the
    // orchestrator calls on the user's behalf sees the user's grant (layer 4 downstream).
    const headers = this.ctx.token !== undefined ? { "astrid-token": this.ctx.token } : undefined;
    const reply = await this.viaBus(() => this.d.bus.request(this.ctx, subject, data, ms, headers));
    return reply.data;
  }

  async ipcCall(
    subject: string,
    kind: string,
    body: unknown,
    timeoutMs: number,
  ): Promise<CallReply> {
    const spec = MESSAGE_KINDS.get(kind);
    if (!spec?.needsDeadline) {
      throw new HostError("invalid", `"${kind}" is not a request kind; ipc.call sends requests`);
    }
    const ms = this.remainingMs(Math.max(1, timeoutMs));
    // The envelope is the host's: session and principal are the call's, never the guest's.
    let wire: Uint8Array;
    try {
      wire = encode(kind as KindName, body as never, this.meta(), { timeoutMs: ms });
    } catch (err) {
      const e = err as ProtocolError;
      throw new HostError(e.code === "too_large" ? "too_large" : "invalid", e.message);
    }
    const reply = await this.ipcRequest(subject, wire, ms);
    let env: ReturnType<typeof decode>;
    try {
      env = decode(reply, { checkDeadline: false });
    } catch (err) {
      throw new HostError(
        "invalid",
        `${subject} answered with a malformed message: ${(err as Error).message}`,
      );
    }
    if (env.kind === "error") {
      const e = env.body as ErrorReply;
      throw new HostError(CALLEE_CODE[e.code], e.message);
    }
    return { kind: env.kind, body: env.body };
  }

  async sessionEmit(event: unknown): Promise<void> {
    let wire: Uint8Array;
    try {
      wire = encode("session.event", event as never, this.meta());
    } catch (err) {
      throw new HostError("invalid", (err as Error).message);
    }
    await this.viaBus(() =>
      this.d.bus.publish(this.ctx, subjects.sessionEvents(this.ctx.session), wire),
    );
  }

  private meta() {
    return { session: this.ctx.session, principal: this.ctx.principal, capsule: this.ctx.capsule };
  }

  async ipcSubscribe(pattern: string): Promise<number> {
    if (this.subs.size >= HOST_LIMITS.maxSubscriptions) {
      throw new HostError(
        "too_large",
        `at most ${HOST_LIMITS.maxSubscriptions} subscriptions per call`,
      );
    }
    const handle = this.nextHandle++;
    const entry: HostSubscription = { sub: undefined, queue: [], wake: undefined };
    entry.sub = await this.viaBus(() =>
      this.d.bus.subscribe(this.ctx, pattern, (m: BusMessage) => {
        // A slow guest must not make the sidecar buffer without bound: drop the oldest.
        if (entry.queue.length >= 1024) entry.queue.shift();
        entry.queue.push({ subject: m.subject, data: m.data, headers: m.headers });
        entry.wake?.();
      }),
    );
    this.subs.set(handle, entry);
    return handle;
  }

  async ipcRecv(handle: number, timeoutMs: number): Promise<BusDelivery | null> {
    const s = this.subs.get(handle);
    if (!s) throw new HostError("not_found", `no subscription with handle ${handle}`);
    const ms = this.remainingMs(Math.min(Math.max(0, timeoutMs), HOST_LIMITS.maxRecvTimeoutMs));
    if (s.queue.length === 0 && ms > 0) {
      await waitForWake(s, ms);
    }
    return s.queue.shift() ?? null;
  }

  async ipcUnsubscribe(handle: number): Promise<void> {
    const s = this.subs.get(handle);
    if (!s) throw new HostError("not_found", `no subscription with handle ${handle}`);
    s.sub?.unsubscribe();
    s.wake?.();
    this.subs.delete(handle);
  }

  // ── kv ───────────────────────────────────────────────────────────────────────────────────

  private async kvGate(bucket: string, key: string, action: string): Promise<void> {
    const decision = !this.d.kvBuckets.includes(bucket)
      ? deny(
          "gate",
          `kv bucket "${bucket}" is not declared in the manifest's kv [${this.d.kvBuckets.join(", ")}]`,
        )
      : typeof key !== "string" || key.length === 0 || key.length > 512
        ? deny("gate", "kv keys are 1-512 characters")
        : allow("gate", `kv ${bucket}`);
    const d = await this.d.log.record(this.ctx, decision, action, `${bucket}/${key}`);
    if (!d.allowed) throw denied(d);
  }

  private scoped(bucket: string): string {
    return `${this.ctx.capsule}.${bucket}`;
  }

  async kvGet(bucket: string, key: string): Promise<Uint8Array | null> {
    await this.kvGate(bucket, key, "kv.get");
    return this.d.kv.get(this.scoped(bucket), key);
  }

  async kvSet(bucket: string, key: string, value: Uint8Array): Promise<void> {
    if (value.byteLength > HOST_LIMITS.maxKvValueBytes) {
      throw new HostError(
        "too_large",
        `kv values are at most ${HOST_LIMITS.maxKvValueBytes} bytes`,
      );
    }
    await this.kvGate(bucket, key, "kv.set");
    await this.d.kv.set(this.scoped(bucket), key, value);
  }

  async kvDelete(bucket: string, key: string): Promise<void> {
    await this.kvGate(bucket, key, "kv.delete");
    await this.d.kv.delete(this.scoped(bucket), key);
  }

  async kvList(bucket: string, prefix: string): Promise<string[]> {
    await this.kvGate(bucket, prefix || "*", "kv.list");
    return this.d.kv.list(this.scoped(bucket), prefix);
  }

  // ── fs ───────────────────────────────────────────────────────────────────────────────────

  /** `cwd://x` and relative paths are in the workspace, `home://x` in the home directory. */
  private abs(p: string): string {
    if (typeof p !== "string" || p.length === 0) throw new HostError("invalid", "empty path");
    if (p.startsWith("cwd://")) return path.join(this.d.workspace, p.slice(6));
    if (p.startsWith("home://")) return path.join(this.d.home, p.slice(7));
    return path.isAbsolute(p) ? p : path.join(this.d.workspace, p);
  }

  private async authorizeFs(kind: "fs_read" | "fs_write", p: string, audit: string) {
    const d = await this.d.layers.authorize(this.ctx, {
      kind,
      target: p,
      audit,
      resource: `fs:${p}`,
      permission: kind === "fs_read" ? "read" : "write",
      gate: () => (kind === "fs_read" ? this.d.gate.fs.checkRead(p) : this.d.gate.fs.checkWrite(p)),
    });
    if (!d.allowed) throw denied(d);
  }

  async fsRead(p: string): Promise<Uint8Array> {
    const file = this.abs(p);
    await this.authorizeFs("fs_read", file, "fs.read");
    // checkedOpen re-checks at open time, closing the window between the decision and the open.
    const opened = await this.d.gate.fs.checkedOpen(file, constants.O_RDONLY);
    if (!opened.handle) throw denied(opened.decision);
    try {
      const { size } = await opened.handle.stat();
      if (size > HOST_LIMITS.maxFileBytes) {
        throw new HostError(
          "too_large",
          `"${p}" is ${size} bytes; the limit is ${HOST_LIMITS.maxFileBytes}`,
        );
      }
      return new Uint8Array(await opened.handle.readFile());
    } finally {
      await opened.handle.close();
    }
  }

  async fsWrite(p: string, data: Uint8Array): Promise<void> {
    if (data.byteLength > HOST_LIMITS.maxFileBytes) {
      throw new HostError("too_large", `writes are at most ${HOST_LIMITS.maxFileBytes} bytes`);
    }
    const file = this.abs(p);
    await this.authorizeFs("fs_write", file, "fs.write");
    const opened = await this.d.gate.fs.checkedOpen(
      file,
      constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC,
      0o644,
    );
    if (!opened.handle) throw denied(opened.decision);
    try {
      await opened.handle.writeFile(data);
    } finally {
      await opened.handle.close();
    }
  }

  async fsList(p: string): Promise<DirEntry[]> {
    const dir = this.abs(p);
    await this.authorizeFs("fs_read", dir, "fs.list");
    try {
      const entries = await readdir(dir, { withFileTypes: true });
      return entries.slice(0, 10_000).map((e) => ({ name: e.name, kind: FILE_KIND(e) }));
    } catch (err) {
      throw new HostError(
        (err as NodeJS.ErrnoException).code === "ENOENT" ? "not_found" : "io",
        (err as Error).message,
      );
    }
  }

  async fsStat(p: string): Promise<FileStat> {
    const file = this.abs(p);
    await this.authorizeFs("fs_read", file, "fs.stat");
    try {
      const s = await lstat(file);
      return { kind: FILE_KIND(s), size: s.size, mtimeMs: s.mtimeMs };
    } catch (err) {
      throw new HostError(
        (err as NodeJS.ErrnoException).code === "ENOENT" ? "not_found" : "io",
        (err as Error).message,
      );
    }
  }

  // ── net ──────────────────────────────────────────────────────────────────────────────────

  /** Limits, gate (SSRF guard), token and approval for one http exchange; audited once. */
  private async authorizeHttp(req: HttpRequest, audit: string) {
    if (this.httpInFlight >= HOST_LIMITS.maxConcurrentHttp) {
      throw new HostError(
        "too_large",
        `at most ${HOST_LIMITS.maxConcurrentHttp} http requests and streams at once`,
      );
    }
    if (req.body && req.body.byteLength > HOST_LIMITS.maxHttpBodyBytes) {
      throw new HostError(
        "too_large",
        `request bodies are at most ${HOST_LIMITS.maxHttpBodyBytes} bytes`,
      );
    }
    const resolved = await this.d.gate.net.resolveAndCheck(req.url, this.d.lookup);
    const t = resolved.target;
    const hostPort = t ? `${t.host}:${t.port}` : req.url;
    const d = await this.d.layers.authorize(this.ctx, {
      kind: "net",
      target: hostPort,
      audit,
      args: { method: req.method, url: req.url },
      resource: `net:${hostPort}`,
      permission: "connect",
      gate: () => resolved.decision,
    });
    if (!d.allowed || !t) throw denied(d);
    if (t.scheme !== "http" && t.scheme !== "https") {
      throw new HostError("invalid", `http speaks http and https, not ${t.scheme}`);
    }
    return { scheme: t.scheme, pinned: resolved.addresses[0]!, hostPort };
  }

  async httpRequest(req: HttpRequest): Promise<HttpResponse> {
    const { scheme, pinned } = await this.authorizeHttp(req, "net.http");
    this.httpInFlight++;
    try {
      return await this.send(req, scheme, pinned, this.remainingMs(req.timeoutMs ?? 30_000));
    } finally {
      this.httpInFlight--;
    }
  }

  async httpOpen(req: HttpRequest): Promise<HttpStreamHead> {
    const { scheme, pinned, hostPort } = await this.authorizeHttp(req, "net.http-open");
    // The slot is held from here until httpClose or the end of the call.
    this.httpInFlight++;
    try {
      const headMs = this.remainingMs(req.timeoutMs ?? 30_000);
      const { request, res } = await new Promise<{
        request: http.ClientRequest;
        res: http.IncomingMessage;
      }>((resolve, reject) => {
        const r = this.connect(req, scheme, pinned, headMs, (res) => resolve({ request: r, res }));
        r.on("error", (e) => reject(e instanceof HostError ? e : new HostError("io", e.message)));
      });
      const handle = this.nextStream++;
      const s: HttpStream = {
        destroy: () => {
          clearTimeout(deadline);
          request.destroy();
          res.destroy();
        },
        resume: () => res.resume(),
        queue: [],
        queued: 0,
        paused: false,
        ended: false,
        failure: undefined,
        wake: undefined,
      };
      const fail = (e: HostError) => {
        if (s.ended || s.failure) return;
        s.failure = e;
        s.destroy();
        s.wake?.();
      };
      // After the head the body may take as long as the call has left, not the idle timeout
      // meant for connecting: a model may think for a while between two deltas.
      request.setTimeout(0);
      const deadline = setTimeout(
        () =>
          fail(new HostError("timeout", `http stream from ${hostPort} passed the call's deadline`)),
        Math.max(0, this.ctx.deadline - Date.now()),
      );
      let total = 0;
      res.on("data", (c: Buffer) => {
        total += c.length;
        if (total > HOST_LIMITS.maxHttpBodyBytes) {
          fail(
            new HostError("too_large", `response body over ${HOST_LIMITS.maxHttpBodyBytes} bytes`),
          );
          return;
        }
        s.queue.push(c);
        s.queued += c.length;
        if (s.queued >= HTTP_STREAM_HIGH_WATER && !s.paused) {
          s.paused = true;
          res.pause();
        }
        s.wake?.();
      });
      res.on("end", () => {
        clearTimeout(deadline);
        s.ended = true;
        s.wake?.();
      });
      // A body cut before its end (reset, a chunked body without its last chunk, fewer bytes
      // than content-length) must read as a failure, never as a short but complete body.
      res.on("error", (e) =>
        fail(new HostError("io", `http stream from ${hostPort} broke: ${e.message}`)),
      );
      res.on("close", () => {
        if (!res.complete) {
          fail(new HostError("io", `http stream from ${hostPort} closed before the body ended`));
        }
      });
      this.streams.set(handle, s);
      return { handle, status: res.statusCode ?? 0, headers: flatHeaders(res.headers) };
    } catch (err) {
      this.httpInFlight--;
      throw err;
    }
  }

  async httpRead(handle: number, timeoutMs: number): Promise<Uint8Array | null> {
    const s = this.streams.get(handle);
    if (!s) throw new HostError("not_found", `no http stream with handle ${handle}`);
    if (s.queue.length === 0 && !s.ended && !s.failure) {
      const ms = this.remainingMs(Math.min(Math.max(0, timeoutMs), HOST_LIMITS.maxRecvTimeoutMs));
      if (ms > 0) {
        await waitForWake(s, ms);
      }
    }
    if (s.queue.length > 0) {
      // Everything that arrived since the last read, up to the cap, in one piece: a guest that
      // fell behind catches up in fewer host calls (each call counts against the call's cap).
      const parts: Buffer[] = [];
      let size = 0;
      while (s.queue.length > 0 && size < HOST_LIMITS.maxHttpChunkBytes) {
        const next = s.queue.shift()!;
        const room = HOST_LIMITS.maxHttpChunkBytes - size;
        if (next.length > room) {
          parts.push(next.subarray(0, room));
          s.queue.unshift(next.subarray(room));
          size += room;
        } else {
          parts.push(next);
          size += next.length;
        }
      }
      const piece = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      s.queued -= piece.length;
      if (s.paused && s.queued < HTTP_STREAM_HIGH_WATER / 2) {
        s.paused = false;
        s.resume();
      }
      return new Uint8Array(piece);
    }
    if (s.failure) throw s.failure;
    if (s.ended) return null;
    return new Uint8Array(0);
  }

  async httpClose(handle: number): Promise<void> {
    if (!this.streams.has(handle)) {
      throw new HostError("not_found", `no http stream with handle ${handle}`);
    }
    this.closeStream(handle);
  }

  private closeStream(handle: number): void {
    const s = this.streams.get(handle);
    if (!s) return;
    this.streams.delete(handle);
    this.httpInFlight--;
    s.destroy();
    s.wake?.();
  }

  /**
   * Sends the request to the address the gate checked, never to a second DNS answer
   * (rebinding), while TLS still verifies the certificate for the host name.
   */
  private connect(
    req: HttpRequest,
    scheme: "http" | "https",
    pinned: string,
    timeoutMs: number,
    onResponse: (res: http.IncomingMessage) => void,
  ): http.ClientRequest {
    const lib = scheme === "https" ? https : http;
    const family = pinned.includes(":") ? 6 : 4;
    const r = lib.request(
      req.url,
      {
        method: req.method,
        headers: { ...req.headers },
        lookup: (_host, opts, cb) => {
          if ((opts as { all?: boolean }).all) {
            (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [
              { address: pinned, family },
            ]);
          } else cb(null, pinned, family);
        },
        timeout: timeoutMs,
      },
      onResponse,
    );
    r.on("timeout", () =>
      r.destroy(new HostError("timeout", `http request timed out after ${timeoutMs} ms`)),
    );
    r.end(req.body ? Buffer.from(req.body) : undefined);
    return r;
  }

  private send(req: HttpRequest, scheme: "http" | "https", pinned: string, timeoutMs: number) {
    return new Promise<HttpResponse>((resolve, reject) => {
      const r = this.connect(req, scheme, pinned, timeoutMs, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > HOST_LIMITS.maxHttpBodyBytes) {
            res.destroy();
            reject(
              new HostError(
                "too_large",
                `response body over ${HOST_LIMITS.maxHttpBodyBytes} bytes`,
              ),
            );
            return;
          }
          chunks.push(c);
        });
        res.on("end", () => {
          resolve({
            status: res.statusCode ?? 0,
            headers: flatHeaders(res.headers),
            body: new Uint8Array(Buffer.concat(chunks)),
          });
        });
        res.on("error", (e) => reject(new HostError("io", e.message)));
      });
      r.on("error", (e) => reject(e instanceof HostError ? e : new HostError("io", e.message)));
    });
  }

  // ── process ──────────────────────────────────────────────────────────────────────────────

  async processSpawn(req: SpawnRequest): Promise<SpawnResult> {
    const args = [...req.args];
    const exe = await this.d.gate.process.resolveExecutable(req.command);
    const d = await this.d.layers.authorize(this.ctx, {
      kind: "process",
      target: req.command,
      audit: "process.spawn",
      args,
      resource: `process:${req.command}`,
      permission: "execute",
      gate: () => {
        const argDecision = this.d.gate.process.checkSpawn(req.command, args);
        return exe.decision.allowed ? argDecision : exe.decision;
      },
    });
    if (!d.allowed || !exe.path) throw denied(d);
    const timeoutMs = this.remainingMs(req.timeoutMs ?? 30_000);
    return new Promise<SpawnResult>((resolve, reject) => {
      // No shell, a fixed trusted PATH and nothing of the sidecar's environment: a capsule's
      // command must not inherit the sidecar's secrets.
      const child = spawn(exe.path!, args, {
        cwd: this.d.workspace,
        env: {
          PATH: this.d.gate.process.trustedPath().join(":"),
          LANG: "C.UTF-8",
          HOME: this.d.workspace,
        },
        shell: false,
        stdio: ["pipe", "pipe", "pipe"],
        timeout: timeoutMs,
        killSignal: "SIGKILL",
      });
      const cap = HOST_LIMITS.maxProcessOutputBytes;
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outSize = 0;
      let errSize = 0;
      let truncated = false;
      child.stdout.on("data", (c: Buffer) => {
        if (outSize + c.length > cap) {
          truncated = true;
          out.push(c.subarray(0, Math.max(0, cap - outSize)));
          outSize = cap;
        } else {
          out.push(c);
          outSize += c.length;
        }
      });
      child.stderr.on("data", (c: Buffer) => {
        if (errSize + c.length > cap) {
          truncated = true;
          err.push(c.subarray(0, Math.max(0, cap - errSize)));
          errSize = cap;
        } else {
          err.push(c);
          errSize += c.length;
        }
      });
      child.on("error", (e) => reject(new HostError("io", e.message)));
      child.on("close", (code, signal) =>
        resolve({
          exitCode: code,
          signal,
          stdout: new Uint8Array(Buffer.concat(out)),
          stderr: new Uint8Array(Buffer.concat(err)),
          truncated,
        }),
      );
      child.stdin.on("error", () => {});
      child.stdin.end(req.stdin ? Buffer.from(req.stdin) : undefined);
    });
  }

  // ── approval ─────────────────────────────────────────────────────────────────────────────

  async approvalRequest(ask: ApprovalAsk): Promise<ApprovalOutcome> {
    if (ask.kind === "other") {
      return { granted: false, reason: 'approval kind "other" is not supported; name the action' };
    }
    const d = await this.d.layers.authorize(this.ctx, {
      kind: ask.kind === "tool" ? "tool" : ask.kind,
      target: ask.target,
      audit: "approval.asked",
      args: ask.args,
      resource: ask.kind === "tool" ? `tool:${ask.target}` : `other:${ask.target}`,
      permission: "execute",
      gate: () => allow("gate", "an explicit approval request grants nothing by itself"),
    });
    return d.allowed ? { granted: true, scope: "once" } : { granted: false, reason: d.reason };
  }
}
