/**
 * The controller work queue (client-go `workqueue` semantics). It holds keys, not events:
 * a key added ten times before a worker takes it is processed once; a key being processed is
 * never handed to a second worker, and a key re-added meanwhile is queued once, after
 * `done`. That is what makes reconcilers level-triggered and safe to run with many workers.
 */
import { RateLimiter, type RateLimiterOptions } from "./rate-limiter.js";

export interface WorkQueueOptions extends RateLimiterOptions {
  /** Name used in log lines and errors. */
  name?: string;
}

export class WorkQueue {
  readonly name: string;
  private readonly order: string[] = [];
  /** Keys that need processing (queued, or re-added while being processed). */
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  /** Pending delayed adds, one per key: the earliest wins. */
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly limiter: RateLimiter;
  private shuttingDown = false;

  constructor(opts: WorkQueueOptions = {}) {
    this.name = opts.name ?? "queue";
    this.limiter = new RateLimiter(opts);
  }

  /** Marks `key` as needing processing; a no-op if it already does. */
  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return; // queued by done()
    const waiter = this.waiters.shift();
    if (waiter) {
      this.dirty.delete(key);
      this.processing.add(key);
      waiter(key);
    } else this.order.push(key);
  }

  /** Adds `key` after `ms`; an earlier pending add for the same key is kept. */
  addAfter(key: string, ms: number): void {
    if (this.shuttingDown) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = Date.now() + ms;
    const pending = this.delayed.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    // A pending retry must not keep a stopping process alive.
    timer.unref();
    this.delayed.set(key, { at, timer });
  }

  /** Adds `key` after its rate-limited delay (exponential per key, bounded overall). */
  addRateLimited(key: string): void {
    this.addAfter(key, this.limiter.when(key));
  }

  /** Clears the key's failure history: its next rate-limited add starts again at the base delay. */
  forget(key: string): void {
    this.limiter.forget(key);
  }

  numRequeues(key: string): number {
    return this.limiter.numRequeues(key);
  }

  /** Next key to process, waiting for one; `undefined` once the queue is shut down. */
  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.order.shift();
    if (key !== undefined) {
      this.dirty.delete(key);
      this.processing.add(key);
      return Promise.resolve(key);
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Ends processing of `key`; if it was re-added meanwhile, it is queued again now. */
  done(key: string): void {
    this.processing.delete(key);
    if (!this.dirty.has(key) || this.shuttingDown) return;
    this.dirty.delete(key);
    this.add(key);
  }

  /** Keys waiting to be processed (not counting delayed ones or those in progress). */
  get length(): number {
    return this.order.length;
  }

  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** Stops handing out keys: waiting `get()`s resolve `undefined`, delayed adds are dropped. */
  shutdown(): void {
    this.shuttingDown = true;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    this.order.length = 0;
    this.dirty.clear();
    for (const w of this.waiters.splice(0)) w(undefined);
  }
}
