/**
 * A NATS user issued by the operator under decentralized (JWT) auth: a fresh nkey user whose
 * JWT, signed by the account's signing key, carries the capsule's permissions, so the NATS
 * server itself refuses every subject outside them — also to a capsule that bypasses its
 * sidecar or steals its connection. The result is the standard `.creds` file (JWT + seed).
 */
import { Algorithms, encodeUser, fmtCreds, type Permissions } from "@nats-io/jwt";
import { createUser, fromPublic, fromSeed, type KeyPair } from "@nats-io/nkeys";
import type { NatsPermissions } from "../../core/security/acl/nats-permissions.js";

/** The account the operator issues users in, and the key it signs them with. */
export interface NatsAccountSigner {
  /** The account's public key (`A…`). */
  readonly account: string;
  /** The account's own seed or one of its signing keys (`SA…`). */
  readonly signingKey: KeyPair;
}

export interface IssuedNatsUser {
  /** The user's public key (`U…`): what revocation names. */
  readonly publicKey: string;
  readonly jwt: string;
  /** The standard `.creds` file: the JWT and the user's seed. */
  readonly creds: string;
}

/**
 * A signer from an account public key and an account seed. Refuses anything else up front: a
 * user seed or operator seed would sign JWTs the server rejects at every connect, long after.
 */
export function accountSigner(account: string, seed: string): NatsAccountSigner {
  let accountKey: KeyPair;
  try {
    accountKey = fromPublic(account.trim());
  } catch (err) {
    throw new Error(
      `NATS account ${JSON.stringify(account)}: expected an account public key (A…): ${(err as Error).message}`,
    );
  }
  if (!accountKey.getPublicKey().startsWith("A"))
    throw new Error(`NATS account ${JSON.stringify(account)}: expected an account public key (A…)`);
  const trimmed = seed.trim();
  if (!trimmed.startsWith("SA"))
    throw new Error("NATS account signing key: expected an account nkey seed (SA…)");
  let signingKey: KeyPair;
  try {
    signingKey = fromSeed(new TextEncoder().encode(trimmed));
  } catch (err) {
    throw new Error(
      `NATS account signing key: expected an account nkey seed (SA…): ${(err as Error).message}`,
    );
  }
  return { account: accountKey.getPublicKey(), signingKey };
}

const DURATION = /^(\d+)(ms|s|m|h)$/;
const NANOS: Record<string, number> = { ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** A Go duration ("1m", "500ms") as the nanoseconds a user JWT's `resp.ttl` holds. */
export function durationNanos(d: string): number {
  const m = DURATION.exec(d);
  const unit = m?.[2];
  if (!m || unit === undefined)
    throw new Error(`duration "${d}" must be a number with ms, s, m or h, like "1m"`);
  return Number(m[1]) * (NANOS[unit] ?? 0);
}

/** The server-config shape of permissions (natsPermissions) in the user JWT's shape. */
export function jwtPermissions(perms: NatsPermissions): Permissions {
  const side = (p: NatsPermissions["publish"]) => ({
    ...(p.allow ? { allow: [...p.allow] } : {}),
    ...(p.deny ? { deny: [...p.deny] } : {}),
  });
  const pub = side(perms.publish);
  const sub = side(perms.subscribe);
  // An empty side means "everything" to nats-server; natsPermissions writes nothing-allowed as
  // deny ">", so an empty one here is a bug upstream and must not become a grant.
  if (!pub.allow?.length && !pub.deny?.length)
    throw new Error(
      "NATS permissions: publish has neither allow nor deny (would allow everything)",
    );
  if (!sub.allow?.length && !sub.deny?.length)
    throw new Error(
      "NATS permissions: subscribe has neither allow nor deny (would allow everything)",
    );
  const out: Permissions = { pub, sub };
  if (perms.allow_responses) {
    out.resp = {
      max: perms.allow_responses.max,
      ttl: durationNanos(perms.allow_responses.expires),
    };
  }
  return out;
}

/** A new user with `perms`, named `name` (shown in the server's monitoring). */
export async function issueNatsUser(
  signer: NatsAccountSigner,
  name: string,
  perms: NatsPermissions,
): Promise<IssuedNatsUser> {
  const user = createUser();
  const own = signer.signingKey.getPublicKey() === signer.account;
  const jwt = await encodeUser(
    name,
    user,
    own ? signer.signingKey : signer.account,
    // Bearer tokens would let anyone holding the JWT alone connect; the seed must sign the nonce.
    { ...jwtPermissions(perms), bearer_token: false },
    { algorithm: Algorithms.v2, ...(own ? {} : { signer: signer.signingKey }) },
  );
  const creds = new TextDecoder().decode(fmtCreds(jwt, user));
  return { publicKey: user.getPublicKey(), jwt, creds };
}
