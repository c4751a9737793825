/**
 * Revokes NATS users of the operator's account: the account JWT gets the user's public key in
 * its `revocations`, is re-signed with an operator signing key and pushed to the servers
 * through the system account (`$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE`). The server then
 * refuses the user's JWT at connect and drops its open connections — without it a deleted
 * Capsule's `.creds`, copied out of its Secret, would keep working until the JWT expires.
 *
 * The current account JWT is read back from the server's resolver (CLAIMS.LOOKUP) rather than
 * rebuilt, so limits, signing keys and earlier revocations set by an admin are kept.
 */
import { type Account, Algorithms, decode, encodeAccount } from "@nats-io/jwt";
import { fromSeed, type KeyPair } from "@nats-io/nkeys";
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";

export interface AccountRevokerOptions {
  servers: string | string[];
  /** `.creds` of a user of the system account. */
  systemCreds: string;
  /** An operator seed (`SO…`) the servers trust: the operator's own or one of its signing keys. */
  operatorSeed: string;
  /** The account's public key (`A…`). */
  account: string;
  /** Per request to the system account; default 5000 ms. */
  timeoutMs?: number;
}

interface UpdateReply {
  data?: { code?: number; message?: string };
  error?: { code?: number; description?: string };
}

export function operatorKey(seed: string): KeyPair {
  const trimmed = seed.trim();
  if (!trimmed.startsWith("SO"))
    throw new Error("NATS operator signing key: expected an operator nkey seed (SO…)");
  try {
    return fromSeed(new TextEncoder().encode(trimmed));
  } catch (err) {
    throw new Error(
      `NATS operator signing key: expected an operator nkey seed (SO…): ${(err as Error).message}`,
    );
  }
}

export class NatsAccountRevoker {
  /** One revocation at a time: two read-modify-write rounds in parallel would lose one. */
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly nc: NatsConnection,
    private readonly operator: KeyPair,
    private readonly account: string,
    private readonly timeoutMs: number,
  ) {}

  static async connect(opts: AccountRevokerOptions): Promise<NatsAccountRevoker> {
    const operator = operatorKey(opts.operatorSeed);
    const nc = await connect({
      servers: opts.servers,
      name: "astrid-operator:revoker",
      authenticator: credsAuthenticator(new TextEncoder().encode(opts.systemCreds)),
      maxReconnectAttempts: -1,
    });
    return new NatsAccountRevoker(nc, operator, opts.account, opts.timeoutMs ?? 5000);
  }

  /** Revokes every JWT issued to `userKey` until now. Idempotent. */
  revoke(userKey: string): Promise<void> {
    if (!/^U[A-Z2-7]{55}$/.test(userKey))
      throw new Error(`NATS user ${JSON.stringify(userKey)}: expected a user public key (U…)`);
    const run = this.tail.then(() => this.revokeNow(userKey));
    this.tail = run.catch(() => {});
    return run;
  }

  private async revokeNow(userKey: string): Promise<void> {
    const where = `NATS account ${this.account}`;
    const lookup = await this.nc.request(
      `$SYS.REQ.ACCOUNT.${this.account}.CLAIMS.LOOKUP`,
      undefined,
      { timeout: this.timeoutMs },
    );
    const current = lookup.string().trim();
    if (current === "") throw new Error(`${where}: the server's resolver has no JWT for it`);
    // Verifies the signature; what the resolver serves was accepted by the server already.
    const claims = decode<Account>(current);
    if (claims.sub !== this.account)
      throw new Error(`${where}: the resolver answered with the JWT of ${claims.sub}`);
    const now = Math.floor(Date.now() / 1000);
    const nats = { ...claims.nats };
    const prior = nats.revocations?.[userKey] ?? 0;
    // Every JWT of the user issued at or before this second is refused.
    nats.revocations = { ...(nats.revocations ?? {}), [userKey]: Math.max(prior, now) };
    delete nats.type;
    delete nats.version;
    const updated = await encodeAccount(claims.name, this.account, nats, {
      algorithm: Algorithms.v2,
      signer: this.operator,
      ...(claims.exp !== undefined ? { exp: claims.exp } : {}),
      ...(claims.nbf !== undefined ? { nbf: claims.nbf } : {}),
    });
    const reply = await this.nc.request(`$SYS.REQ.ACCOUNT.${this.account}.CLAIMS.UPDATE`, updated, {
      timeout: this.timeoutMs,
    });
    const body = reply.json<UpdateReply>();
    if (body.error || (body.data?.code !== undefined && body.data.code >= 400)) {
      throw new Error(
        `${where}: the server refused the revocation of ${userKey}: ${body.error?.description ?? body.data?.message ?? "no reason given"}`,
      );
    }
  }

  async close(): Promise<void> {
    await this.tail;
    await this.nc.close();
  }
}
