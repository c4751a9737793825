/**
 * Revocation list in a JetStream KV bucket, for the cluster: key = jti, value = {"exp":…}.
 * Every sidecar mirrors the bucket through `kv.watch()`; the used-set for single-use tokens is
 * a second bucket written with `create`, which the server refuses when the key exists, so
 * exactly one sidecar in the cluster redeems a single-use token.
 *
 * Fail closed: while NATS is disconnected or the watch has ended, the mirror may miss
 * revocations; after the grace period `unavailable()` says so and verifiers deny. After a
 * reconnect the mirror counts as current only once the watch has caught up with the bucket's
 * last sequence, so a revocation made during the outage is applied before tokens pass again.
 */
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { Availability } from "./availability.js";
import { ChangeListeners, PRUNE_MARGIN_SECONDS, type RevocationSet } from "./revocation-set.js";

export interface KvRevocationOptions {
  /** Revocation bucket. Default "astrid-revocations". */
  bucket?: string;
  /** Used-set bucket. Default "astrid-used-tokens". */
  usedBucket?: string;
  /** How long the used-set remembers a redeemed token, ms. Default 24 h. */
  usedRetentionMs?: number;
  /** How long an outage is tolerated before verifiers deny, ms. Default 5 s. */
  graceMs?: number;
  clock?: () => number;
}

export class KvRevocationSet implements RevocationSet {
  private readonly revoked = new Map<string, number>();
  private readonly listeners = new ChangeListeners();
  private readonly availability: Availability;
  private lastRevision = 0;
  /** Revision the watch must reach before a reconnect counts as recovered. */
  private catchUpTo = 0;
  private closed = false;
  private disconnected = false;
  private watchEnded = false;
  private watchStop: (() => void) | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly used: KV,
    private readonly usedRetentionMs: number,
    private readonly clock: () => number,
    graceMs: number,
  ) {
    this.availability = new Availability(graceMs, clock);
  }

  static async open(nc: NatsConnection, opts: KvRevocationOptions = {}): Promise<KvRevocationSet> {
    const kvm = new Kvm(nc);
    const usedRetentionMs = opts.usedRetentionMs ?? 24 * 3600_000;
    const kv = await kvm.create(opts.bucket ?? "astrid-revocations", { history: 1 });
    const used = await kvm.create(opts.usedBucket ?? "astrid-used-tokens", {
      history: 1,
      ttl: usedRetentionMs,
    });
    const set = new KvRevocationSet(
      nc,
      kv,
      used,
      usedRetentionMs,
      opts.clock ?? Date.now,
      opts.graceMs ?? 5000,
    );
    await set.startWatch();
    set.watchConnection();
    return set;
  }

  has(jti: string): boolean {
    return this.revoked.has(jti);
  }

  unavailable(): string | undefined {
    return this.availability.unavailable();
  }

  onChange(listener: (jti: string) => void): () => void {
    return this.listeners.add(listener);
  }

  async revoke(jti: string, exp: number): Promise<void> {
    await this.kv.put(jti, JSON.stringify({ exp }));
    this.apply(jti, exp);
  }

  async markUsed(jti: string, exp: number): Promise<boolean> {
    // The used marker vanishes after the retention; a token outliving it could be replayed.
    if (exp * 1000 - this.clock() > this.usedRetentionMs) {
      throw new Error(
        `single-use token outlives the used-set retention of ${this.usedRetentionMs} ms`,
      );
    }
    try {
      await this.used.create(jti, JSON.stringify({ exp }));
      return true;
    } catch (err) {
      if (
        err instanceof JetStreamApiError &&
        (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
          err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
      ) {
        return false;
      }
      throw err;
    }
  }

  /** Deletes revocations whose token expired (plus a margin); run by one owner, e.g. the operator. */
  async prune(nowSeconds = Date.now() / 1000): Promise<number> {
    let n = 0;
    for (const [jti, exp] of [...this.revoked]) {
      if (exp + PRUNE_MARGIN_SECONDS < nowSeconds) {
        await this.kv.delete(jti);
        n++;
      }
    }
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watchStop?.();
  }

  private async startWatch(): Promise<void> {
    const status = await this.kv.status();
    const iter = await this.kv.watch();
    this.watchStop = () => iter.stop();
    let settle!: (err?: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      settle = (err) => (err ? reject(err) : resolve());
    });
    this.catchUpTo = status.streamInfo.state.last_seq;
    // An empty bucket has nothing to replay; waiting for an entry would hang.
    if (status.values === 0) settle();
    const ended = (cause: string) => {
      this.watchEnded = true;
      if (!this.closed) this.availability.fail(cause);
      settle(new Error(cause));
    };
    void (async () => {
      for await (const e of iter) {
        this.lastRevision = Math.max(this.lastRevision, e.revision);
        if (e.operation === "PUT") {
          let exp = 0;
          try {
            exp = Number((e.json() as { exp?: unknown }).exp) || 0;
          } catch {
            // an unreadable value still revokes: the key alone is the revocation
          }
          this.apply(e.key, exp);
        } else if (this.revoked.delete(e.key)) {
          this.listeners.emit(e.key);
        }
        if (this.lastRevision >= this.catchUpTo) {
          settle();
          if (this.availability.failing && !this.disconnected) this.availability.ok();
        }
      }
      ended("the revocation watch ended");
    })().catch((err: Error) => ended(`the revocation watch failed: ${err.message}`));
    await ready;
  }

  private watchConnection(): void {
    void (async () => {
      for await (const s of this.nc.status()) {
        if (s.type === "disconnect") {
          this.disconnected = true;
          this.availability.fail("NATS disconnected");
        } else if (s.type === "reconnect") {
          this.disconnected = false;
          void this.recover();
        }
      }
      if (!this.closed) this.availability.fail("NATS connection closed");
    })();
  }

  /** Marks the mirror current again once the watch has seen everything written meanwhile. */
  private async recover(): Promise<void> {
    // Until the bucket's last sequence is known, no watch entry may declare the mirror current.
    this.catchUpTo = Number.POSITIVE_INFINITY;
    try {
      this.catchUpTo = (await this.kv.status()).streamInfo.state.last_seq;
      if (this.lastRevision >= this.catchUpTo && !this.disconnected && !this.watchEnded) {
        this.availability.ok();
      }
    } catch (err) {
      this.availability.fail(`cannot read the revocation bucket (${(err as Error).message})`);
    }
  }

  private apply(jti: string, exp: number): void {
    const had = this.revoked.has(jti);
    this.revoked.set(jti, Math.max(exp, this.revoked.get(jti) ?? 0));
    if (!had) this.listeners.emit(jti);
  }
}
