/**
 * Tokens whose signature and claims syntax have been verified, keyed by the token string, so
 * the hot path never re-runs ed25519. The cache only remembers "this string is authentic";
 * every use still runs the cheap checks (time, principal, scope, permission, session,
 * revocation, single-use), which is why a revocation takes effect on the very next use.
 */
import type { CapabilityClaims } from "./claims.js";
import type { TrustedKey } from "./keys.js";
import type { ResourceScope } from "./resource.js";

export interface VerifiedToken {
  readonly claims: CapabilityClaims;
  readonly scope: ResourceScope;
  /** The key that verified it; a removed key makes the entry worthless at once. */
  readonly key: TrustedKey;
  /** Wall-clock ms after which the entry is dropped and the token verified afresh. */
  readonly cachedUntilMs: number;
}

export interface VerifiedTokenCacheOptions {
  /** Most entries; the oldest is evicted when full. Default 10 000. */
  maxEntries?: number;
  /** Longest an entry lives, whatever the token's exp. Default 5 minutes. */
  ttlMs?: number;
}

export class VerifiedTokenCache {
  readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly entries = new Map<string, VerifiedToken>();

  constructor(opts: VerifiedTokenCacheOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.ttlMs = opts.ttlMs ?? 300_000;
  }

  get(token: string, nowMs: number): VerifiedToken | undefined {
    const e = this.entries.get(token);
    if (e === undefined) return undefined;
    if (nowMs >= e.cachedUntilMs) {
      this.entries.delete(token);
      return undefined;
    }
    return e;
  }

  set(token: string, entry: VerifiedToken): void {
    if (this.entries.size >= this.maxEntries && !this.entries.has(token)) {
      // Map iteration order is insertion order: the first key is the oldest entry.
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(token, entry);
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
