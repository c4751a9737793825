/**
 * The Bus: one interface for the subject bus that capsules talk over. Two implementations
 * keep the same contract (core/bus/contract.ts): `EmbeddedBus` in-process for the local
 * daemon, and the NATS bus (`connectNatsBus`) for the cluster.
 */

export type Headers = Readonly<Record<string, string>>;

export interface BusMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  /** `{}` when the message carries none. */
  readonly headers: Headers;
  /** Where a responder answers; undefined for a plain publish. */
  readonly reply: string | undefined;
  /** Publishes to `reply`; throws NoReplySubjectError when there is none. */
  respond(data: Uint8Array, opts?: { headers?: Record<string, string> }): void;
}

export type MessageHandler = (msg: BusMessage) => void | Promise<void>;

export interface SubscribeOptions {
  /** Queue group: each message goes to exactly one member of the group. */
  queue?: string;
  /** Unsubscribe automatically after this many messages. */
  max?: number;
}

export interface Subscription {
  readonly pattern: string;
  readonly queue: string | undefined;
  /** Stops delivery at once, including messages already queued for this subscription. */
  unsubscribe(): void;
  /** Stops matching new messages, delivers what is already queued, then resolves. */
  drain(): Promise<void>;
}

export interface PublishOptions {
  headers?: Record<string, string>;
  reply?: string;
}

export interface RequestOptions {
  timeoutMs: number;
  headers?: Record<string, string>;
}

export type BusStatus = "connected" | "disconnected" | "reconnecting" | "closed";

/** Options both implementations accept. */
export interface BusOptions {
  /**
   * Receives errors that have no caller to throw to: a handler that threw or rejected
   * (HandlerError), a publish the server refused (PermissionError). Defaults to a process
   * warning so such errors are never silent.
   */
  onError?: (err: Error) => void;
}

export interface Bus {
  readonly kind: "embedded" | "nats";
  /** Largest payload accepted, in bytes. */
  readonly maxPayload: number;
  publish(subject: string, data: Uint8Array, opts?: PublishOptions): void;
  subscribe(pattern: string, handler: MessageHandler, opts?: SubscribeOptions): Subscription;
  /** Never throws synchronously: every failure is a rejection with a typed error. */
  request(subject: string, data: Uint8Array, opts: RequestOptions): Promise<BusMessage>;
  /** A fresh `_INBOX.<unique>` subject. */
  newInbox(): string;
  /** Resolves once everything published so far has reached the server / been delivered. */
  flush(): Promise<void>;
  /** Returns a function that removes the listener. */
  onStatus(listener: (s: BusStatus) => void): () => void;
  /** Drains subscriptions, then closes; idempotent. */
  close(): Promise<void>;
}

export function defaultOnError(err: Error): void {
  process.emitWarning(err);
}
