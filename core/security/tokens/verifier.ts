/**
 * Layer 4: does this token let this principal do this to this resource now? Checks run in a
 * fixed order (syntax, alg, kid, signature, claims, time, principal, resource, permission,
 * session, revocation, single use) and the first failure is the deny reason, so an audit entry
 * says exactly why a token was refused.
 */
import { allow, type Decision, deny } from "../decision.js";
import {
  type CapabilityClaims,
  capabilityClaimsSchema,
  describeIssues,
  type Permission,
} from "./claims.js";
import { type Ed25519Engine, verifyWithNoble, verifyWithNode } from "./ed25519.js";
import { fromB64url, splitToken } from "./jws.js";
import type { TrustedKeys } from "./keys.js";
import { ResourceScope } from "./resource.js";
import type { RevocationSet } from "./revocation/revocation-set.js";
import { type VerifiedToken, VerifiedTokenCache } from "./verified-cache.js";

export interface TokenRequest {
  /** Who is acting; must equal the token's `sub`. */
  readonly principal: string;
  /** What is touched, e.g. `fs:/work/src/a.ts`, `tool:github/create_issue`. */
  readonly resource: string;
  readonly permission: Permission;
  /** The session the call belongs to; required by session-bound tokens. */
  readonly session?: string;
  /** sha256 of the canonical JSON of the call's arguments; required by argument-bound tokens. */
  readonly argsHash?: string;
}

export interface TokenVerifierOptions {
  readonly keys: TrustedKeys;
  readonly revocations: RevocationSet;
  /** Wall clock in ms; tests pass a fake one. */
  readonly clock?: () => number;
  /** Clock difference tolerated between issuer and verifier, seconds. Default 30. */
  readonly skewSeconds?: number;
  /** Verified-token cache; `false` verifies the signature on every call. */
  readonly cache?: VerifiedTokenCache | false;
  /** Signature implementation; both agree (see ed25519.ts), node is faster. Default "node". */
  readonly engine?: Ed25519Engine;
}

/** What check() leaves to verify(): consuming a single-use token, which needs the ledger. */
interface Redeem {
  readonly redeem: CapabilityClaims;
  readonly rule: string;
}

export class TokenVerifier {
  private readonly keys: TrustedKeys;
  private readonly revocations: RevocationSet;
  private readonly clock: () => number;
  private readonly skew: number;
  private readonly cache: VerifiedTokenCache | undefined;
  private readonly engine: Ed25519Engine;

  constructor(opts: TokenVerifierOptions) {
    this.keys = opts.keys;
    this.revocations = opts.revocations;
    this.clock = opts.clock ?? Date.now;
    this.skew = opts.skewSeconds ?? 30;
    this.cache = opts.cache === false ? undefined : (opts.cache ?? new VerifiedTokenCache());
    this.engine = opts.engine ?? "node";
  }

  /** Full verification, consuming a single-use token on success. */
  async verify(token: string, req: TokenRequest): Promise<Decision> {
    const r = this.evaluate(token, req);
    if (!("redeem" in r)) return r;
    const { jti, exp } = r.redeem;
    let first: boolean;
    try {
      first = await this.revocations.markUsed(jti, exp);
    } catch (err) {
      return deny("token", `single-use ledger unavailable: ${(err as Error).message}`);
    }
    return first ? allow("token", r.rule) : deny("token", `single-use token ${jti} already used`);
  }

  /**
   * Synchronous verification for the hot path. A single-use token is denied here, because
   * consuming it needs the (possibly remote) used-set: redeem it through verify().
   */
  check(token: string, req: TokenRequest): Decision {
    const r = this.evaluate(token, req);
    if (!("redeem" in r)) return r;
    return deny("token", `single-use token ${r.redeem.jti} must be redeemed through verify()`);
  }

  /**
   * Whether an authentic token speaks about this request at all (resource, permission and
   * argument binding match), without judging its validity. The sidecar uses it for host calls
   * made during a call whose token was already verified: a token for `tool:x` says nothing about
   * a file the tool reads, so that read goes to the approval question instead of being denied.
   */
  applies(token: string, req: TokenRequest): boolean {
    const nowMs = this.clock();
    let v = this.cache?.get(token, nowMs);
    if (v === undefined) {
      const fresh = this.authenticate(token, nowMs);
      if (typeof fresh === "string") return false;
      v = fresh;
      this.cache?.set(token, v);
    }
    try {
      if (v.scope.match(req.resource) === undefined) return false;
    } catch {
      return false;
    }
    if (!v.claims.perm.includes(req.permission)) return false;
    return v.claims.arg === undefined || v.claims.arg === req.argsHash;
  }

  private evaluate(token: string, req: TokenRequest): Decision | Redeem {
    const nowMs = this.clock();
    let v = this.cache?.get(token, nowMs);
    // A removed (rotated-out) key must cut off its tokens even while they sit in the cache.
    if (v !== undefined && this.keys.get(v.key.kid) !== v.key) v = undefined;
    if (v === undefined) {
      const fresh = this.authenticate(token, nowMs);
      if (typeof fresh === "string") return deny("token", fresh);
      v = fresh;
      this.cache?.set(token, v);
    }
    return this.authorize(v, req, nowMs / 1000);
  }

  /** Syntax, algorithm, key, signature and claims schema: everything the cache remembers. */
  private authenticate(token: string, nowMs: number): VerifiedToken | string {
    const t = splitToken(token);
    if (typeof t === "string") return t;
    const key = this.keys.get(t.header.kid);
    if (key === undefined) return `unknown issuer key "${t.header.kid}"`;
    const data = Buffer.from(t.signingInput, "ascii");
    const ok =
      this.engine === "node"
        ? verifyWithNode(t.signature, data, key.keyObject)
        : verifyWithNoble(t.signature, data, key.raw);
    if (!ok) return `bad signature for issuer key "${key.kid}"`;
    // Only authenticated bytes are parsed as claims.
    let payload: unknown;
    try {
      payload = JSON.parse(fromB64url(t.payloadPart)?.toString("utf8") ?? "");
    } catch {
      return "malformed token: payload is not JSON";
    }
    const parsed = capabilityClaimsSchema.safeParse(payload);
    if (!parsed.success) return `invalid claims: ${describeIssues(parsed.error)}`;
    const claims = parsed.data;
    if (claims.iss !== key.kid) {
      return `claims iss "${claims.iss}" does not match header kid "${key.kid}"`;
    }
    const cacheTtl = this.cache?.ttlMs ?? 0;
    return {
      claims,
      scope: new ResourceScope(claims.res),
      key,
      cachedUntilMs: Math.min((claims.exp + this.skew) * 1000, nowMs + cacheTtl),
    };
  }

  private authorize(v: VerifiedToken, req: TokenRequest, now: number): Decision | Redeem {
    const c = v.claims;
    const skew = this.skew;
    if (c.iat > now + skew)
      return deny("token", `token issued in the future at ${iso(c.iat)} ${when(now, skew)}`);
    if (c.nbf !== undefined && c.nbf > now + skew) {
      return deny("token", `token not valid before ${iso(c.nbf)} ${when(now, skew)}`);
    }
    if (now >= c.exp + skew)
      return deny("token", `token expired at ${iso(c.exp)} ${when(now, skew)}`);
    if (req.principal !== c.sub) {
      return deny("token", `token is for principal "${c.sub}", not "${req.principal}"`);
    }
    let granted: string | undefined;
    try {
      granted = v.scope.match(req.resource);
    } catch (err) {
      return deny("token", `requested ${(err as Error).message}`);
    }
    if (granted === undefined) {
      return deny(
        "token",
        `resource "${req.resource}" is outside the token's scope [${c.res.join(", ")}]`,
      );
    }
    if (!c.perm.includes(req.permission)) {
      return deny(
        "token",
        `permission "${req.permission}" not granted; the token grants [${c.perm.join(", ")}]`,
      );
    }
    if (c.ses !== undefined && c.ses !== req.session) {
      return deny(
        "token",
        `token is bound to session "${c.ses}", not ${req.session === undefined ? "a call without a session" : `"${req.session}"`}`,
      );
    }
    if (c.arg !== undefined && c.arg !== req.argsHash) {
      return deny(
        "token",
        `token is bound to arguments ${c.arg.slice(0, 12)}…, not ${req.argsHash === undefined ? "a call without arguments" : `${req.argsHash.slice(0, 12)}…`}`,
      );
    }
    const unavailable = this.revocations.unavailable();
    if (unavailable !== undefined) return deny("token", unavailable);
    if (this.revocations.has(c.jti)) return deny("token", `token ${c.jti} is revoked`);
    const rule = `token ${c.jti} (issuer ${c.iss}) grants ${req.permission} on "${granted}"`;
    return c.once ? { redeem: c, rule } : allow("token", rule);
  }
}

function iso(seconds: number): string {
  return new Date(seconds * 1000).toISOString();
}

function when(now: number, skew: number): string {
  return `(now ${iso(now)}, skew ${skew} s)`;
}
