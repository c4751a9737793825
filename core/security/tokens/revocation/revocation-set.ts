/**
 * The global revocation list every verifier consults, and the used-set that makes single-use
 * tokens single-use. Lookups are synchronous in-memory checks (the hot path); each backing keeps
 * its mirror current by watching its source and reports when it can no longer vouch for it.
 */

/**
 * Entries are kept this long past their token's exp before pruning, well beyond any verifier's
 * clock skew allowance, so a token still accepted within skew is still found revoked.
 */
export const PRUNE_MARGIN_SECONDS = 300;

export interface RevocationSet {
  /** Is this token id revoked? Answered from the in-memory mirror. */
  has(jti: string): boolean;
  /** Revokes a token id until `exp` (seconds), after which the entry may be pruned. */
  revoke(jti: string, exp: number): Promise<void>;
  /**
   * Atomically records the first use of a single-use token: true for the first caller, false
   * for every later one (across every verifier sharing the backing). Rejects when the ledger
   * cannot be reached; callers must then deny.
   */
  markUsed(jti: string, exp: number): Promise<boolean>;
  /**
   * Undefined while the mirror is trustworthy; otherwise why not. A backing that has lost its
   * source for longer than its grace period says so here, and verifiers deny (fail closed).
   */
  unavailable(): string | undefined;
  /** Called with each jti whose revocation state changed; returns an unsubscribe function. */
  onChange(listener: (jti: string) => void): () => void;
  close(): Promise<void>;
}

/** Listener bookkeeping shared by the backings. */
export class ChangeListeners {
  private readonly listeners = new Set<(jti: string) => void>();

  add(listener: (jti: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(jti: string): void {
    for (const l of this.listeners) l(jti);
  }
}
