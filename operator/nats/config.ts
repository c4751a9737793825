/**
 * The operator's NATS account settings (environment, from a Secret the chart mounts). All four
 * or none: issuing users that could never be revoked would leave a deleted Capsule's `.creds`
 * working for good, so a partial configuration is refused rather than half-applied.
 *
 * - ASTRID_NATS_ACCOUNT: the account's public key (`A…`)
 * - ASTRID_NATS_ACCOUNT_SEED_FILE: the account seed or one of its signing keys (`SA…`)
 * - ASTRID_NATS_OPERATOR_SEED_FILE: an operator signing key (`SO…`) to re-sign the account JWT
 * - ASTRID_NATS_SYSTEM_CREDS_FILE: `.creds` of a system-account user, to push it to the servers
 */
import { readFile } from "node:fs/promises";
import type { KubeRest } from "../runtime/rest.js";
import { type AccountRevokerOptions, NatsAccountRevoker, operatorKey } from "./account-revoker.js";
import { accountSigner } from "./user-jwt.js";
import { type NatsUserRevoker, NatsUsers } from "./user-secret.js";

export interface NatsAccountEnv {
  readonly account: string;
  readonly accountSeedFile: string;
  readonly operatorSeedFile: string;
  readonly systemCredsFile: string;
}

const NAMES = {
  account: "ASTRID_NATS_ACCOUNT",
  accountSeedFile: "ASTRID_NATS_ACCOUNT_SEED_FILE",
  operatorSeedFile: "ASTRID_NATS_OPERATOR_SEED_FILE",
  systemCredsFile: "ASTRID_NATS_SYSTEM_CREDS_FILE",
} as const;

/** Undefined when none is set (the feature is off); problems name what a partial set lacks. */
export function natsAccountEnv(
  env: NodeJS.ProcessEnv,
  problems: string[],
): NatsAccountEnv | undefined {
  const entries = Object.entries(NAMES).map(([field, name]) => [field, name, env[name] || ""]);
  const set = entries.filter(([, , v]) => v !== "");
  if (set.length === 0) return undefined;
  const missing = entries.filter(([, , v]) => v === "").map(([, name]) => name);
  if (missing.length > 0) {
    problems.push(
      `per-capsule NATS users need all of ${Object.values(NAMES).join(", ")}; missing ${missing.join(", ")}`,
    );
    return undefined;
  }
  return Object.fromEntries(entries.map(([field, , v]) => [field, v])) as unknown as NatsAccountEnv;
}

/** Revoker that connects on first use: an operator started while NATS is down still reconciles. */
export class LazyAccountRevoker implements NatsUserRevoker {
  private connecting: Promise<NatsAccountRevoker> | undefined;

  constructor(private readonly opts: AccountRevokerOptions) {}

  async revoke(userKey: string): Promise<void> {
    this.connecting ??= NatsAccountRevoker.connect(this.opts);
    let revoker: NatsAccountRevoker;
    try {
      revoker = await this.connecting;
    } catch (err) {
      this.connecting = undefined;
      throw err;
    }
    await revoker.revoke(userKey);
  }

  async close(): Promise<void> {
    const revoker = await this.connecting?.catch(() => undefined);
    await revoker?.close();
  }
}

/** Reads the key files (refusing wrong kinds of keys now, not at the first Capsule). */
export async function openNatsUsers(
  cfg: NatsAccountEnv,
  rest: KubeRest,
  servers: string | string[],
): Promise<{ users: NatsUsers; close(): Promise<void> }> {
  const read = (file: string, name: string) =>
    readFile(file, "utf8").catch((err: Error) => {
      throw new Error(`${name}: cannot read ${file}: ${err.message}`);
    });
  const signer = accountSigner(cfg.account, await read(cfg.accountSeedFile, NAMES.accountSeedFile));
  const operatorSeed = await read(cfg.operatorSeedFile, NAMES.operatorSeedFile);
  operatorKey(operatorSeed);
  const systemCreds = await read(cfg.systemCredsFile, NAMES.systemCredsFile);
  const revoker = new LazyAccountRevoker({
    servers,
    systemCreds,
    operatorSeed,
    account: signer.account,
  });
  return { users: new NatsUsers(rest, signer, revoker), close: () => revoker.close() };
}
