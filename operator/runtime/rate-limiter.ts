/**
 * How long a failing key waits before its next attempt: per-key exponential backoff, capped,
 * combined with an overall token bucket — the client-go default controller rate limiter. The
 * per-key part keeps one broken object from hot-looping; the bucket keeps many broken objects
 * together from flooding the API server.
 */

export interface RateLimiterOptions {
  /** First retry delay for a key; doubles with each further failure. Default 5 ms. */
  baseDelayMs?: number;
  /** Upper bound of the per-key delay. Default 1000 s. */
  maxDelayMs?: number;
  /** Overall retries per second once the burst is spent. Default 10. */
  qps?: number;
  /** Retries allowed at once before the bucket starts spacing them. Default 100. */
  burst?: number;
  /** Clock in ms; injectable so tests need no timing. */
  now?: () => number;
}

/** Per-key exponential backoff: base·2^failures, capped. */
export class ItemExponentialBackoff {
  private readonly failures = new Map<string, number>();
  constructor(
    private readonly baseDelayMs = 5,
    private readonly maxDelayMs = 1_000_000,
  ) {}

  when(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    // 2^n overflows to Infinity long after the cap; min() keeps the result finite.
    return Math.min(this.baseDelayMs * 2 ** n, this.maxDelayMs);
  }

  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  forget(key: string): void {
    this.failures.delete(key);
  }
}

/** A token bucket: each reservation takes a token; an empty bucket answers with a wait. */
export class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(
    private readonly qps: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Takes a token and returns how many ms until it is really available (0 = now). */
  reserve(): number {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.qps);
    this.last = t;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.qps) * 1000);
  }
}

/** The larger of the key's backoff and the bucket's wait. */
export class RateLimiter {
  private readonly backoff: ItemExponentialBackoff;
  private readonly bucket: TokenBucket;
  constructor(opts: RateLimiterOptions = {}) {
    this.backoff = new ItemExponentialBackoff(opts.baseDelayMs ?? 5, opts.maxDelayMs ?? 1_000_000);
    this.bucket = new TokenBucket(opts.qps ?? 10, opts.burst ?? 100, opts.now ?? Date.now);
  }

  when(key: string): number {
    return Math.max(this.backoff.when(key), this.bucket.reserve());
  }

  numRequeues(key: string): number {
    return this.backoff.numRequeues(key);
  }

  forget(key: string): void {
    this.backoff.forget(key);
  }
}
