/**
 * Tracks whether a revocation backing can still see its source. A short outage is tolerated
 * for `graceMs` (the mirror is at most that stale); past it, `unavailable()` names the cause
 * and verifiers deny every token rather than honour one that may have been revoked meanwhile.
 */
export class Availability {
  private failingSince: number | undefined;
  private cause = "";

  constructor(
    private readonly graceMs: number,
    private readonly clock: () => number = Date.now,
  ) {}

  fail(cause: string): void {
    this.failingSince ??= this.clock();
    this.cause = cause;
  }

  ok(): void {
    this.failingSince = undefined;
  }

  get failing(): boolean {
    return this.failingSince !== undefined;
  }

  unavailable(): string | undefined {
    if (this.failingSince === undefined) return undefined;
    if (this.clock() - this.failingSince < this.graceMs) return undefined;
    return `revocation list unavailable: ${this.cause} since ${new Date(this.failingSince).toISOString()}`;
  }
}
