/**
 * In-process Bus for the local daemon: the same subject grammar, queue groups and
 * request/reply semantics as NATS, without a server. Delivery is asynchronous (a handler
 * never runs inside `publish`) through one FIFO queue drained in a microtask, which keeps
 * per-subscription order and costs no timer per message.
 */
import { randomBytes } from "node:crypto";
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
  HandlerError,
  NoReplySubjectError,
  NoRespondersError,
  PayloadTooLargeError,
  RequestTimeoutError,
} from "./errors.js";
import { assertPublishSubject } from "./subject.js";
import { type MatchResult, Sublist } from "./sublist.js";
import {
  assertMax,
  assertQueueName,
  assertTimeout,
  EMPTY_HEADERS,
  normalizeHeaders,
} from "./validate.js";

export interface EmbeddedBusOptions extends BusOptions {
  /** Largest payload in bytes; NATS' default of 1 MiB so code moves between shapes unchanged. */
  maxPayload?: number;
}

export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

// Deliveries handled in one microtask turn before yielding to the event loop, so two
// handlers that answer each other forever cannot starve timers and I/O.
const TURN_BUDGET = 10_000;

class EmbeddedMessage implements BusMessage {
  constructor(
    private readonly bus: EmbeddedBus,
    readonly subject: string,
    readonly data: Uint8Array,
    readonly headers: Headers,
    readonly reply: string | undefined,
  ) {}

  respond(data: Uint8Array, opts?: { headers?: Record<string, string> }): void {
    if (this.reply === undefined) throw new NoReplySubjectError(this.subject);
    this.bus.publish(this.reply, data, opts);
  }
}

class EmbeddedSubscription implements Subscription {
  /** Messages routed to this subscription (counted at publish, for `max`). */
  routed = 0;
  /** True once nothing more may be delivered, not even what is queued. */
  closed = false;
  private draining: Promise<void> | undefined;

  constructor(
    private readonly bus: EmbeddedBus,
    readonly pattern: string,
    readonly queue: string | undefined,
    readonly handler: MessageHandler,
    readonly max: number,
  ) {}

  unsubscribe(): void {
    if (this.closed) return;
    this.closed = true;
    this.bus.unindex(this);
  }

  drain(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (!this.draining) {
      this.bus.unindex(this);
      this.draining = this.bus.afterQueued().then(() => {
        this.closed = true;
      });
    }
    return this.draining;
  }
}

interface Pending {
  readonly resolve: (m: BusMessage) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** Queue entry whose "subscription" slot marks a callback (flush, drain) instead. */
const MARKER = null;

export class EmbeddedBus implements Bus {
  readonly kind = "embedded" as const;
  readonly maxPayload: number;
  private readonly index = new Sublist<EmbeddedSubscription>();
  private readonly onError: (err: Error) => void;
  private readonly statusListeners = new Set<(s: BusStatus) => void>();
  /** Pairs (subscription | MARKER, message | callback), drained from `head`. */
  private queue: unknown[] = [];
  private head = 0;
  private scheduled = false;
  private closing = false;
  private closed = false;
  private closePromise: Promise<void> | undefined;
  private readonly id = randomBytes(8).toString("hex");
  private inboxSeq = 0;
  private readonly replyPrefix = `_INBOX.${this.id}.r.`;
  private replySub: EmbeddedSubscription | undefined;
  private readonly pending = new Map<string, Pending>();
  private requestSeq = 0;

  constructor(opts: EmbeddedBusOptions = {}) {
    this.maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.onError = opts.onError ?? defaultOnError;
  }

  publish(subject: string, data: Uint8Array, opts?: PublishOptions): void {
    if (this.closed) throw new BusClosedError();
    if (data.length > this.maxPayload) throw new PayloadTooLargeError(data.length, this.maxPayload);
    let headers = EMPTY_HEADERS;
    let reply: string | undefined;
    if (opts) {
      if (opts.reply !== undefined) {
        // A reply subject is published to later: refuse wildcards now, as the NATS bus does.
        assertPublishSubject(opts.reply);
        reply = opts.reply;
      }
      if (opts.headers) headers = normalizeHeaders(opts.headers);
    }
    this.route(this.index.match(subject), subject, data, headers, reply);
  }

  subscribe(pattern: string, handler: MessageHandler, opts?: SubscribeOptions): Subscription {
    if (this.closing) throw new BusClosedError();
    const queue = opts?.queue;
    if (queue !== undefined) assertQueueName(queue);
    if (opts?.max !== undefined) assertMax(opts.max);
    const sub = new EmbeddedSubscription(this, pattern, queue, handler, opts?.max ?? 0);
    this.index.insert(sub);
    return sub;
  }

  request(subject: string, data: Uint8Array, opts: RequestOptions): Promise<BusMessage> {
    try {
      if (this.closing) throw new BusClosedError();
      assertTimeout(opts.timeoutMs);
      if (data.length > this.maxPayload) {
        throw new PayloadTooLargeError(data.length, this.maxPayload);
      }
      const headers = opts.headers ? normalizeHeaders(opts.headers) : EMPTY_HEADERS;
      const match = this.index.match(subject);
      // NATS answers a request nobody listens to with a no-responders status at once;
      // doing the same here saves the caller a full timeout.
      if (match.plain.length === 0 && match.groups.length === 0) {
        throw new NoRespondersError(subject);
      }
      this.replySub ??= this.subscribeReplies();
      const token = String(++this.requestSeq);
      return new Promise<BusMessage>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(token);
          reject(new RequestTimeoutError(subject, opts.timeoutMs));
        }, opts.timeoutMs);
        this.pending.set(token, { resolve, reject, timer });
        this.route(match, subject, data, headers, this.replyPrefix + token);
      });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  newInbox(): string {
    return `_INBOX.${this.id}.${++this.inboxSeq}`;
  }

  flush(): Promise<void> {
    if (this.closed) return Promise.reject(new BusClosedError());
    return this.afterQueued();
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
    for (const [token, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(token);
      p.reject(new BusClosedError());
    }
    const subs = this.index.all();
    await Promise.all(subs.map((s) => s.drain()));
    this.closed = true;
    this.queue = [];
    this.head = 0;
    for (const l of this.statusListeners) l("closed");
    this.statusListeners.clear();
  }

  /** @internal Removes a subscription from matching; queued deliveries are up to it. */
  unindex(sub: EmbeddedSubscription): void {
    this.index.remove(sub);
  }

  /** @internal Resolves once every delivery queued before this call has been made. */
  afterQueued(): Promise<void> {
    return new Promise((resolve) => this.enqueue(MARKER, resolve));
  }

  private subscribeReplies(): EmbeddedSubscription {
    const sub = new EmbeddedSubscription(
      this,
      `${this.replyPrefix}*`,
      undefined,
      (m) => {
        const token = m.subject.slice(this.replyPrefix.length);
        const p = this.pending.get(token);
        if (!p) return; // late answer after a timeout: dropped, as on NATS
        this.pending.delete(token);
        clearTimeout(p.timer);
        p.resolve(m);
      },
      0,
    );
    this.index.insert(sub);
    return sub;
  }

  private route(
    match: MatchResult<EmbeddedSubscription>,
    subject: string,
    data: Uint8Array,
    headers: Headers,
    reply: string | undefined,
  ): void {
    // Each recipient gets its own copy taken now: the publisher may reuse its buffer, and
    // one capsule must not be able to change the bytes another capsule receives.
    const { plain, groups } = match;
    for (let i = 0; i < plain.length; i++) {
      this.deliverTo(plain[i]!, subject, data, headers, reply);
    }
    if (groups.length > 0) {
      const c = match.cursor++;
      for (let i = 0; i < groups.length; i++) {
        const g = groups[i]!;
        this.deliverTo(g[c % g.length]!, subject, data, headers, reply);
      }
    }
  }

  private deliverTo(
    sub: EmbeddedSubscription,
    subject: string,
    data: Uint8Array,
    headers: Headers,
    reply: string | undefined,
  ): void {
    if (sub.max !== 0 && ++sub.routed >= sub.max) this.index.remove(sub);
    this.enqueue(sub, new EmbeddedMessage(this, subject, data.slice(), headers, reply));
  }

  private enqueue(sub: EmbeddedSubscription | typeof MARKER, item: unknown): void {
    this.queue.push(sub, item);
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.run);
    }
  }

  private readonly run = (): void => {
    const q = this.queue;
    let i = this.head;
    let budget = TURN_BUDGET;
    while (i < q.length) {
      const sub = q[i] as EmbeddedSubscription | typeof MARKER;
      const item = q[i + 1];
      i += 2;
      if (sub === MARKER) {
        (item as () => void)();
      } else if (!sub.closed) {
        this.invoke(sub, item as EmbeddedMessage);
      }
      if (--budget === 0 && i < q.length) {
        this.queue = q.slice(i);
        this.head = 0;
        setImmediate(this.run);
        return;
      }
    }
    q.length = 0;
    this.head = 0;
    this.scheduled = false;
  };

  private invoke(sub: EmbeddedSubscription, msg: EmbeddedMessage): void {
    try {
      const r = sub.handler(msg);
      if (r !== undefined && typeof (r as Promise<void>).then === "function") {
        (r as Promise<void>).then(undefined, (err: unknown) => this.handlerFailed(sub, msg, err));
      }
    } catch (err) {
      this.handlerFailed(sub, msg, err);
    }
  }

  private handlerFailed(sub: EmbeddedSubscription, msg: EmbeddedMessage, err: unknown): void {
    try {
      this.onError(new HandlerError(sub.pattern, msg.subject, err));
    } catch {
      // An onError hook that throws must not break delivery to the next subscriber.
    }
  }
}
