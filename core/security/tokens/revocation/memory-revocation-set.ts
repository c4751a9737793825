/** In-process revocation list and used-set: tests, and a single-process daemon. */
import { ChangeListeners, PRUNE_MARGIN_SECONDS, type RevocationSet } from "./revocation-set.js";

export class MemoryRevocationSet implements RevocationSet {
  private readonly revoked = new Map<string, number>();
  private readonly used = new Map<string, number>();
  private readonly listeners = new ChangeListeners();

  has(jti: string): boolean {
    return this.revoked.has(jti);
  }

  async revoke(jti: string, exp: number): Promise<void> {
    this.revoked.set(jti, exp);
    this.listeners.emit(jti);
  }

  async markUsed(jti: string, exp: number): Promise<boolean> {
    // The check and the set run in one synchronous step, so two verifies cannot both win.
    if (this.used.has(jti)) return false;
    this.used.set(jti, exp);
    return true;
  }

  unavailable(): string | undefined {
    return undefined;
  }

  onChange(listener: (jti: string) => void): () => void {
    return this.listeners.add(listener);
  }

  /** Drops entries whose token has expired; they can no longer be presented anyway. */
  prune(nowSeconds = Date.now() / 1000): void {
    for (const m of [this.revoked, this.used]) {
      for (const [jti, exp] of m) if (exp + PRUNE_MARGIN_SECONDS < nowSeconds) m.delete(jti);
    }
  }

  async close(): Promise<void> {}
}
