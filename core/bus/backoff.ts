/**
 * Reconnect backoff for the NATS bus: exponential, capped, with jitter so a fleet of
 * sidecars that lost the same server does not reconnect in lock-step (thundering herd).
 */

export interface BackoffOptions {
  /** Base delay: attempt n waits min(maxMs, initialMs·2^n), minus jitter. */
  initialMs: number;
  maxMs: number;
  /** Fraction of the delay that is randomised away, 0..1. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 10_000, jitter: 0.5 };

/** Delay before attempt `attempt` (0-based): min(max, initial·2^attempt), minus up to `jitter` of it. */
export function backoffDelay(
  attempt: number,
  o: BackoffOptions,
  random: () => number = Math.random,
): number {
  const base = Math.min(o.maxMs, o.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(base * (1 - o.jitter * random()));
}

/**
 * State for the client's `reconnectDelayHandler`, which takes no arguments and is called
 * several times per attempt: the delay is drawn once per attempt so repeated calls agree.
 */
export class ReconnectBackoff {
  private attempt = 0;
  private drawnFor = -1;
  private drawn = 0;

  constructor(
    private readonly opts: BackoffOptions,
    private readonly random: () => number = Math.random,
  ) {}

  /** Pass as `reconnectDelayHandler`. */
  readonly delay = (): number => {
    if (this.drawnFor !== this.attempt) {
      this.drawnFor = this.attempt;
      this.drawn = backoffDelay(this.attempt, this.opts, this.random);
    }
    return this.drawn;
  };

  /** A dial is about to be made (the client's "reconnecting" status). */
  attempted(): void {
    this.attempt++;
  }

  /** Connected again: the next outage starts from the initial delay. */
  reset(): void {
    this.attempt = 0;
    this.drawnFor = -1;
  }
}
