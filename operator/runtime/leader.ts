/**
 * Leader election on a coordination.k8s.io/v1 Lease (client-go's leaderelection). Every
 * replica runs its caches; only the holder of the Lease runs controllers, so two replicas
 * never reconcile — and write — the same object at once.
 *
 * Expiry is judged by when THIS replica last saw the lease record change, not by the
 * renewTime written in it, so clock skew between nodes cannot make a live leader look dead.
 * Updates carry the resourceVersion read, so two candidates racing for an expired lease
 * cannot both win: the second write gets 409 Conflict.
 */
import type { Logger } from "pino";
import {
  ApiError,
  type KubeObject,
  type KubeRest,
  Leases,
  NotFoundError,
  resourcePath,
} from "./rest.js";

export interface LeaderElectionOptions {
  namespace: string;
  /** Lease name, e.g. `astrid-operator`. */
  name: string;
  /** Unique per replica (pod name + random suffix). */
  identity: string;
  /** How long a lease is valid without renewal; others wait this long before taking over. Default 15 s. */
  leaseDurationMs?: number;
  /** The leader gives up if it could not renew for this long; must be < leaseDuration. Default 10 s. */
  renewDeadlineMs?: number;
  /** Pause between attempts to acquire or renew. Default 2 s. */
  retryPeriodMs?: number;
  onStartedLeading?: () => void;
  onStoppedLeading?: () => void;
  log?: Logger;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

interface Lease extends KubeObject {
  spec?: LeaseSpec;
}

/** Kubernetes MicroTime: RFC 3339 with microseconds. */
function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    // The listener goes when the sleep ends either way: a long-lived signal must not collect
    // one listener per retry.
    const onAbort = () => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });

export class LeaderElector {
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private leading = false;
  private observed: { record: string; at: number } | undefined;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private lastRenew = 0;

  constructor(
    private readonly rest: KubeRest,
    private readonly opts: LeaderElectionOptions,
  ) {
    this.leaseDurationMs = opts.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = opts.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = opts.retryPeriodMs ?? 2_000;
    if (this.renewDeadlineMs >= this.leaseDurationMs) {
      throw new Error(
        `renewDeadlineMs (${this.renewDeadlineMs}) must be less than leaseDurationMs (${this.leaseDurationMs}): otherwise a leader may still act after others took over`,
      );
    }
    if (this.retryPeriodMs >= this.renewDeadlineMs) {
      throw new Error(
        `retryPeriodMs (${this.retryPeriodMs}) must be less than renewDeadlineMs (${this.renewDeadlineMs})`,
      );
    }
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Campaigns, then renews; returns at once, the work runs in the background. */
  start(): void {
    this.loop ??= this.run();
  }

  /**
   * Stops campaigning. With `release` (default) a leader hands the lease back at once so a
   * standby takes over without waiting for it to expire; without, it simply goes silent, as
   * a crashed process would.
   */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    this.abort.abort();
    await this.loop;
    if (this.leading) {
      if (opts.release ?? true) await this.release().catch(() => undefined);
      this.setLeading(false);
    }
  }

  private path(name?: string): string {
    return resourcePath(Leases, this.opts.namespace, name);
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted && !this.leading) {
      if (await this.tryAcquireOrRenew().catch((err) => this.logFailure(err))) {
        this.lastRenew = Date.now();
        this.setLeading(true);
      } else await sleep(this.retryPeriodMs, signal);
    }
    while (!signal.aborted && this.leading) {
      await sleep(this.retryPeriodMs, signal);
      if (signal.aborted) break;
      if (await this.tryAcquireOrRenew().catch((err) => this.logFailure(err))) {
        this.lastRenew = Date.now();
      } else if (Date.now() - this.lastRenew > this.renewDeadlineMs) {
        // Past the deadline another replica may already have taken over: stop acting now.
        this.opts.log?.error({ identity: this.opts.identity }, "lost the leader lease");
        this.setLeading(false);
      }
    }
  }

  private logFailure(err: unknown): false {
    this.opts.log?.warn({ err: (err as Error).message }, "leader election attempt failed");
    return false;
  }

  private setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    this.opts.log?.info({ identity: this.opts.identity, leading }, "leadership changed");
    if (leading) this.opts.onStartedLeading?.();
    else this.opts.onStoppedLeading?.();
  }

  private desiredSpec(prev: LeaseSpec | undefined, now: Date): LeaseSpec {
    const mine = prev?.holderIdentity === this.opts.identity;
    return {
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
      acquireTime: mine && prev?.acquireTime ? prev.acquireTime : microTime(now),
      renewTime: microTime(now),
      leaseTransitions: (prev?.leaseTransitions ?? 0) + (mine || !prev ? 0 : 1),
    };
  }

  /** One attempt; true when this replica holds the lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    let lease: Lease;
    try {
      lease = await this.rest.request<Lease>("GET", this.path(this.opts.name));
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      await this.rest.request("POST", this.path(), {
        body: {
          apiVersion: Leases.apiVersion,
          kind: Leases.kind,
          metadata: { name: this.opts.name, namespace: this.opts.namespace },
          spec: this.desiredSpec(undefined, now),
        },
      });
      return true;
    }
    const spec = lease.spec ?? {};
    const record = JSON.stringify(spec);
    if (this.observed?.record !== record) this.observed = { record, at: Date.now() };
    const holder = spec.holderIdentity ?? "";
    const durationMs = (spec.leaseDurationSeconds ?? 0) * 1000;
    const expired = this.observed.at + durationMs < Date.now();
    if (holder && holder !== this.opts.identity && !expired) return false;
    try {
      await this.rest.request("PUT", this.path(this.opts.name), {
        body: { ...lease, spec: this.desiredSpec(spec, now) },
      });
    } catch (err) {
      // 409: someone else wrote the lease since we read it; they won this round.
      if (err instanceof ApiError && err.status === 409) return false;
      throw err;
    }
    return true;
  }

  /** Empties the holder so a standby need not wait out the lease (client-go ReleaseOnCancel). */
  private async release(): Promise<void> {
    const lease = await this.rest.request<Lease>("GET", this.path(this.opts.name));
    if (lease.spec?.holderIdentity !== this.opts.identity) return;
    await this.rest.request("PUT", this.path(this.opts.name), {
      body: {
        ...lease,
        spec: {
          ...lease.spec,
          holderIdentity: "",
          leaseDurationSeconds: 1,
          renewTime: microTime(new Date()),
        },
      },
    });
  }
}
