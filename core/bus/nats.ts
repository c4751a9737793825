/**
 * The Bus over a real NATS server (`@nats-io/transport-node` v3) for the cluster shape.
 * A thin layer: it validates what the embedded bus validates (so both behave the same),
 * maps the client's errors to the bus's typed errors, and otherwise hands straight to the
 * client. Reconnects forever with exponential backoff + jitter; the client re-subscribes
 * every subscription after a reconnect.
 */
import {
  connect,
  createInbox,
  credsAuthenticator,
  errors,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription as NatsSubscription,
  headers as natsHeaders,
} from "@nats-io/transport-node";
import { type BackoffOptions, DEFAULT_BACKOFF, ReconnectBackoff } from "./backoff.js";
import {
  type Bus,
  type BusMessage,
  type BusOptions,
  type BusStatus,
  defaultOnError,
  type Headers,
  type MessageHandler,
  type PublishOptions,
  type RequestOptions,
  type SubscribeOptions,
  type Subscription,
} from "./bus.js";
import {
  BusClosedError,
  BusConnectError,
  HandlerError,
  NoReplySubjectError,
  NoRespondersError,
  PayloadTooLargeError,
  PermissionError,
  RequestTimeoutError,
} from "./errors.js";
import { assertPattern, assertPublishSubject } from "./subject.js";
import {
  assertMax,
  assertQueueName,
  assertTimeout,
  EMPTY_HEADERS,
  normalizeHeaders,
} from "./validate.js";

const VALID_SUBJECT_CACHE = 4096;

export interface NatsBusOptions extends BusOptions {
  servers: string | string[];
  /** Shown by the server's monitoring for this connection (e.g. the capsule name). */
  name?: string;
  user?: string;
  pass?: string;
  token?: string;
  /** Contents of a NATS `.creds` file (user JWT + nkey seed), for decentralized auth. */
  creds?: Uint8Array;
  /** Handshake timeout of each connection attempt; the client's default is 20 s. */
  timeoutMs?: number;
  /** Reconnect backoff; defaults to 250 ms doubling to 10 s with 50 % jitter. */
  reconnect?: Partial<BackoffOptions>;
  /** How long `close()` waits for subscriptions to drain before closing anyway (5 s). */
  drainTimeoutMs?: number;
  /**
   * Prefix of this connection's reply inboxes (default `_INBOX`). A capsule's sidecar uses
   * `_INBOX.<capsule>` so its NATS user can be allowed its own replies and nobody else's.
   */
  inboxPrefix?: string;
}

export async function connectNatsBus(opts: NatsBusOptions): Promise<NatsBus> {
  const backoff = new ReconnectBackoff({ ...DEFAULT_BACKOFF, ...opts.reconnect });
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: opts.servers,
      name: opts.name,
      user: opts.user,
      pass: opts.pass,
      token: opts.token,
      ...(opts.creds ? { authenticator: credsAuthenticator(opts.creds) } : {}),
      timeout: opts.timeoutMs,
      ...(opts.inboxPrefix ? { inboxPrefix: opts.inboxPrefix } : {}),
      // A sidecar outlives any server restart: it never gives up reconnecting.
      maxReconnectAttempts: -1,
      reconnectDelayHandler: backoff.delay,
      // The bus keeps its own stack-free errors; async traces cost an Error per request.
      noAsyncTraces: true,
    });
  } catch (err) {
    throw new BusConnectError(
      Array.isArray(opts.servers) ? opts.servers.join(", ") : opts.servers,
      err,
    );
  }
  return new NatsBus(
    nc,
    backoff,
    opts.onError ?? defaultOnError,
    opts.drainTimeoutMs ?? 5000,
    opts.inboxPrefix,
  );
}

class NatsBusMessage implements BusMessage {
  private hdrs: Headers | undefined;

  constructor(
    private readonly bus: NatsBus,
    private readonly msg: Msg,
  ) {}

  get subject(): string {
    return this.msg.subject;
  }

  get data(): Uint8Array {
    return this.msg.data;
  }

  get reply(): string | undefined {
    return this.msg.reply || undefined;
  }

  // Converted on first read: most handlers never look at headers.
  get headers(): Headers {
    this.hdrs ??= fromNatsHeaders(this.msg.headers);
    return this.hdrs;
  }

  respond(data: Uint8Array, opts?: { headers?: Record<string, string> }): void {
    const reply = this.msg.reply;
    if (!reply) throw new NoReplySubjectError(this.msg.subject);
    this.bus.publish(reply, data, opts);
  }
}

class NatsBusSubscription implements Subscription {
  constructor(
    readonly pattern: string,
    readonly queue: string | undefined,
    private readonly sub: NatsSubscription,
  ) {}

  unsubscribe(): void {
    if (!this.sub.isClosed()) this.sub.unsubscribe();
  }

  async drain(): Promise<void> {
    if (this.sub.isClosed()) return;
    try {
      await this.sub.drain();
    } catch (err) {
      // Closed under us (connection closed): there is nothing left to drain.
      if (!this.sub.isClosed()) throw err;
    }
  }
}

export class NatsBus implements Bus {
  readonly kind = "nats" as const;
  private readonly statusListeners = new Set<(s: BusStatus) => void>();
  private lastStatus: BusStatus = "connected";
  private closing = false;
  private closePromise: Promise<void> | undefined;
  private knownMaxPayload: number;
  private readonly validSubjects = new Set<string>();

  constructor(
    /** The underlying client, for what the Bus does not cover (JetStream, KV). */
    readonly connection: NatsConnection,
    private readonly backoff: ReconnectBackoff,
    private readonly onError: (err: Error) => void,
    private readonly drainTimeoutMs: number,
    private readonly inboxPrefix = "_INBOX",
  ) {
    this.knownMaxPayload = connection.info?.max_payload ?? 1024 * 1024;
    void this.watchStatus();
  }

  /** The server's announced max_payload (headers count toward it on the wire). */
  get maxPayload(): number {
    return this.knownMaxPayload;
  }

  publish(subject: string, data: Uint8Array, opts?: PublishOptions): void {
    if (this.connection.isClosed()) throw new BusClosedError();
    if (data.length > this.knownMaxPayload) {
      throw new PayloadTooLargeError(data.length, this.knownMaxPayload);
    }
    this.checkSubject(subject);
    try {
      if (opts === undefined) {
        this.connection.publish(subject, data);
        return;
      }
      if (opts.reply !== undefined) assertPublishSubject(opts.reply);
      this.connection.publish(subject, data, {
        reply: opts.reply,
        headers: opts.headers ? toNatsHeaders(opts.headers) : undefined,
      });
    } catch (err) {
      throw this.mapError(err, subject, data.length, 0);
    }
  }

  subscribe(pattern: string, handler: MessageHandler, opts?: SubscribeOptions): Subscription {
    if (this.closing) throw new BusClosedError();
    assertPattern(pattern);
    const queue = opts?.queue;
    if (queue !== undefined) assertQueueName(queue);
    if (opts?.max !== undefined) assertMax(opts.max);
    try {
      const sub = this.connection.subscribe(pattern, {
        queue,
        max: opts?.max,
        callback: (err, msg) => {
          if (err) {
            this.report(this.mapError(err, pattern, 0, 0));
            return;
          }
          this.invoke(pattern, handler, msg);
        },
      });
      return new NatsBusSubscription(pattern, queue, sub);
    } catch (err) {
      throw this.mapError(err, pattern, 0, 0);
    }
  }

  request(subject: string, data: Uint8Array, opts: RequestOptions): Promise<BusMessage> {
    try {
      if (this.closing) throw new BusClosedError();
      assertTimeout(opts.timeoutMs);
      if (data.length > this.knownMaxPayload) {
        throw new PayloadTooLargeError(data.length, this.knownMaxPayload);
      }
      this.checkSubject(subject);
      const headers = opts.headers ? toNatsHeaders(opts.headers) : undefined;
      return this.connection.request(subject, data, { timeout: opts.timeoutMs, headers }).then(
        (msg) => new NatsBusMessage(this, msg),
        (err: unknown) => {
          throw this.mapError(err, subject, data.length, opts.timeoutMs);
        },
      );
    } catch (err) {
      return Promise.reject(this.mapError(err, subject, data.length, opts.timeoutMs));
    }
  }

  newInbox(): string {
    return createInbox(this.inboxPrefix);
  }

  async flush(): Promise<void> {
    if (this.connection.isClosed()) throw new BusClosedError();
    try {
      await this.connection.flush();
    } catch (err) {
      throw this.mapError(err, "", 0, 0);
    }
  }

  onStatus(listener: (s: BusStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => {
      this.statusListeners.delete(listener);
    };
  }

  close(): Promise<void> {
    this.closePromise ??= this.shutdown();
    return this.closePromise;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    if (!this.connection.isClosed()) {
      // Draining needs the server; without one (or with one that stops answering) it would
      // wait for a reconnect that may never come, so close outright instead.
      const drained =
        this.lastStatus === "connected"
          ? this.connection.drain().then(
              () => true,
              () => false,
            )
          : Promise.resolve(false);
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), this.drainTimeoutMs);
      });
      const ok = await Promise.race([drained, gaveUp]);
      clearTimeout(timer);
      if (!ok) await this.connection.close().catch(() => undefined);
    }
    await this.connection.closed();
    this.emit("closed");
  }

  // Validating a subject costs about as much as handing the message to the client; hot
  // subjects are checked once. Reply inboxes are unique, so they are never remembered.
  private checkSubject(subject: string): void {
    if (this.validSubjects.has(subject)) return;
    assertPublishSubject(subject);
    if (subject.startsWith("_INBOX.")) return;
    if (this.validSubjects.size >= VALID_SUBJECT_CACHE) this.validSubjects.clear();
    this.validSubjects.add(subject);
  }

  private invoke(pattern: string, handler: MessageHandler, msg: Msg): void {
    const m = new NatsBusMessage(this, msg);
    try {
      const r = handler(m);
      if (r !== undefined && typeof (r as Promise<void>).then === "function") {
        (r as Promise<void>).then(undefined, (err: unknown) =>
          this.report(new HandlerError(pattern, msg.subject, err)),
        );
      }
    } catch (err) {
      this.report(new HandlerError(pattern, msg.subject, err));
    }
  }

  private report(err: Error): void {
    try {
      this.onError(err);
    } catch {
      // An onError hook that throws must not break the client's dispatch loop.
    }
  }

  private async watchStatus(): Promise<void> {
    for await (const s of this.connection.status()) {
      switch (s.type) {
        case "disconnect":
          this.emit("disconnected");
          break;
        case "reconnecting":
          this.backoff.attempted();
          this.emit("reconnecting");
          break;
        case "reconnect":
          this.backoff.reset();
          this.knownMaxPayload = this.connection.info?.max_payload ?? this.knownMaxPayload;
          this.emit("connected");
          break;
        case "close":
          this.emit("closed");
          break;
        case "error":
          // Subscription and request violations reach their caller too; a refused
          // publish has no other way to surface.
          if (s.error instanceof errors.PermissionViolationError) {
            if (s.error.operation === "publish") {
              this.report(new PermissionError("publish", s.error.subject));
            }
          } else {
            this.report(s.error);
          }
          break;
      }
    }
  }

  private emit(s: BusStatus): void {
    if (s === this.lastStatus) return;
    this.lastStatus = s;
    for (const l of this.statusListeners) {
      try {
        l(s);
      } catch (err) {
        this.report(err instanceof Error ? err : new Error(String(err)));
      }
    }
  }

  private mapError(err: unknown, subject: string, size: number, timeoutMs: number): Error {
    if (!(err instanceof Error)) return new Error(String(err));
    if (err instanceof BusClosedError) return err;
    const cause = err.cause instanceof Error ? err.cause : undefined;
    if (err instanceof errors.TimeoutError) return new RequestTimeoutError(subject, timeoutMs);
    if (err instanceof errors.NoRespondersError || cause instanceof errors.NoRespondersError) {
      return new NoRespondersError(subject);
    }
    const perm =
      err instanceof errors.PermissionViolationError
        ? err
        : cause instanceof errors.PermissionViolationError
          ? cause
          : undefined;
    if (perm) {
      return new PermissionError(
        perm.operation === "publish" ? "publish" : "subscribe",
        perm.subject,
      );
    }
    if (
      err instanceof errors.ClosedConnectionError ||
      err instanceof errors.DrainingConnectionError ||
      (this.closing && err instanceof errors.RequestError)
    ) {
      return new BusClosedError();
    }
    if (err instanceof errors.InvalidArgumentError && err.message.includes("max_payload")) {
      // Data alone fitted; data plus encoded headers did not.
      return new PayloadTooLargeError(size, this.knownMaxPayload);
    }
    return err;
  }
}

function toNatsHeaders(h: Record<string, string>): MsgHdrs | undefined {
  const normal = normalizeHeaders(h);
  const keys = Object.keys(normal);
  if (keys.length === 0) return undefined;
  const out = natsHeaders();
  for (const k of keys) out.set(k, normal[k]!);
  return out;
}

function fromNatsHeaders(h: MsgHdrs | undefined): Headers {
  if (!h) return EMPTY_HEADERS;
  const out: Record<string, string> = {};
  let any = false;
  for (const [k, values] of h) {
    out[k] = values[0] ?? "";
    any = true;
  }
  return any ? Object.freeze(out) : EMPTY_HEADERS;
}
