/**
 * A controller runs `workers` loops that take keys from its queue and call the reconciler.
 * The reconciler sees only the key; it reads the world from the cache and returns:
 *  - nothing: done, until an event adds the key again;
 *  - `{ requeueAfter }`: look again later (e.g. waiting on something outside the cluster);
 *  - a thrown error: retried with per-key exponential backoff;
 *  - a thrown TerminalError: recorded (metric, log, `terminalErrors`) and not retried,
 *    because retrying an invalid spec only burns API calls until the user edits it.
 */
import type { Logger } from "pino";
import { pino } from "pino";
import { Counter, Histogram, type Registry } from "prom-client";
import type { WorkQueue } from "./workqueue.js";

export interface Result {
  /** Reconcile this key again after this many ms. */
  requeueAfter?: number;
}

/** What a reconciler returns: `undefined` when done, or a Result asking to look again. */
export type Reconcile = (key: string) => Promise<Result | undefined>;

/** An error retrying cannot fix (invalid spec, forbidden reference): recorded, not retried. */
export class TerminalError extends Error {
  override name = "TerminalError";
}

export interface ControllerOptions {
  name: string;
  queue: WorkQueue;
  reconcile: Reconcile;
  /** Parallel reconciles (never two for the same key). Default 1. */
  workers?: number;
  /** Where the reconcile metrics are registered; none when absent. */
  registry?: Registry;
  log?: Logger;
}

interface ControllerMetrics {
  duration: Histogram<"controller">;
  errors: Counter<"controller">;
  terminal: Counter<"controller">;
}

/** One set of metrics per registry, shared by all controllers (told apart by the label). */
function metricsFor(registry: Registry): ControllerMetrics {
  const existing = registry.getSingleMetric("astrid_operator_reconcile_duration_seconds");
  if (existing) {
    return {
      duration: existing as Histogram<"controller">,
      errors: registry.getSingleMetric(
        "astrid_operator_reconcile_errors_total",
      ) as Counter<"controller">,
      terminal: registry.getSingleMetric(
        "astrid_operator_reconcile_terminal_errors_total",
      ) as Counter<"controller">,
    };
  }
  return {
    duration: new Histogram({
      name: "astrid_operator_reconcile_duration_seconds",
      help: "Time spent in one reconcile, by controller.",
      labelNames: ["controller"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    errors: new Counter({
      name: "astrid_operator_reconcile_errors_total",
      help: "Reconciles that failed (retried or terminal), by controller.",
      labelNames: ["controller"],
      registers: [registry],
    }),
    terminal: new Counter({
      name: "astrid_operator_reconcile_terminal_errors_total",
      help: "Reconciles that failed with a terminal error and were not retried, by controller.",
      labelNames: ["controller"],
      registers: [registry],
    }),
  };
}

export class Controller {
  readonly name: string;
  readonly queue: WorkQueue;
  private readonly reconcileFn: Reconcile;
  private readonly workers: number;
  private readonly metrics: ControllerMetrics | undefined;
  private readonly log: Logger;
  private readonly terminal = new Map<string, string>();
  private loops: Promise<void>[] = [];
  private started = false;

  constructor(opts: ControllerOptions) {
    if (!opts.name) throw new Error("controller name is required (it labels metrics and logs)");
    const workers = opts.workers ?? 1;
    if (!Number.isInteger(workers) || workers < 1) {
      throw new Error(`controller ${opts.name}: workers must be an integer >= 1, got ${workers}`);
    }
    this.name = opts.name;
    this.queue = opts.queue;
    this.reconcileFn = opts.reconcile;
    this.workers = workers;
    this.metrics = opts.registry ? metricsFor(opts.registry) : undefined;
    // Error series exist from the start at 0: a rate over a series that appears only at its
    // first failure reads 0 for that failure, and an alert could not tell "no errors" from
    // "no such controller".
    this.metrics?.errors.inc({ controller: opts.name }, 0);
    this.metrics?.terminal.inc({ controller: opts.name }, 0);
    this.log = (opts.log ?? pino({ level: "warn" })).child({ controller: opts.name });
  }

  /** Keys whose last reconcile ended in a TerminalError, with its message. */
  terminalErrors(): ReadonlyMap<string, string> {
    return this.terminal;
  }

  get isRunning(): boolean {
    return this.started;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    for (let i = 0; i < this.workers; i++) this.loops.push(this.work());
  }

  /** Stops taking keys and waits for reconciles in flight to finish. */
  async stop(): Promise<void> {
    this.queue.shutdown();
    await Promise.all(this.loops);
    this.loops = [];
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      await this.processOne(key);
    }
  }

  private async processOne(key: string): Promise<void> {
    const end = this.metrics?.duration.startTimer({ controller: this.name });
    try {
      const result = await this.reconcileFn(key);
      this.queue.forget(key);
      this.terminal.delete(key);
      if (result?.requeueAfter !== undefined) this.queue.addAfter(key, result.requeueAfter);
    } catch (err) {
      this.metrics?.errors.inc({ controller: this.name });
      const message = err instanceof Error ? err.message : String(err);
      if (err instanceof TerminalError) {
        this.metrics?.terminal.inc({ controller: this.name });
        this.queue.forget(key);
        this.terminal.set(key, message);
        this.log.error(
          { key, err: message },
          "reconcile failed with a terminal error; not retrying",
        );
      } else {
        this.log.warn(
          { key, err: message, attempt: this.queue.numRequeues(key) + 1 },
          "reconcile failed; retrying with backoff",
        );
        this.queue.addRateLimited(key);
      }
    } finally {
      end?.();
      this.queue.done(key);
    }
  }
}
