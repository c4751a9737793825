/**
 * A real nats-server in operator mode for the tests of this folder: one operator (with a
 * signing key), the system account, and an application account with JetStream and a signing
 * key — the layout the operator is deployed against.
 */
import { Algorithms, encodeAccount, encodeOperator, encodeUser, fmtCreds } from "@nats-io/jwt";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";
import { type NatsServerHandle, startNatsServer } from "../../test/harness/nats-server.js";

export interface OperatorModeNats {
  server: NatsServerHandle;
  operator: KeyPair;
  operatorSigningKey: KeyPair;
  account: KeyPair;
  accountSigningKey: KeyPair;
  /** A `.creds` file of a user of the system account. */
  systemCreds: string;
  seedOf(kp: KeyPair): string;
}

const seedOf = (kp: KeyPair) => new TextDecoder().decode(kp.getSeed());

export async function startOperatorModeNats(): Promise<OperatorModeNats> {
  const operator = createOperator();
  const operatorSigningKey = createOperator();
  const system = createAccount();
  const account = createAccount();
  const accountSigningKey = createAccount();
  const v2 = { algorithm: Algorithms.v2 };
  const operatorJwt = await encodeOperator(
    "astrid-test",
    operator,
    { signing_keys: [operatorSigningKey.getPublicKey()], system_account: system.getPublicKey() },
    v2,
  );
  // Without explicit limits a decoded account allows zero connections.
  const open = {
    subs: -1,
    data: -1,
    payload: -1,
    imports: -1,
    exports: -1,
    wildcards: true,
    conn: -1,
    leaf: -1,
  };
  const systemJwt = await encodeAccount(
    "SYS",
    system,
    { limits: open },
    { ...v2, signer: operatorSigningKey },
  );
  const accountJwt = await encodeAccount(
    "astrid",
    account,
    {
      signing_keys: [accountSigningKey.getPublicKey()],
      limits: {
        ...open,
        mem_storage: -1,
        disk_storage: -1,
        streams: -1,
        consumer: -1,
      },
    },
    { ...v2, signer: operatorSigningKey },
  );
  const sysUser = createUser();
  const sysUserJwt = await encodeUser("sys", sysUser, system, {}, v2);
  const server = await startNatsServer({
    operator: {
      operatorJwt,
      systemAccount: system.getPublicKey(),
      accounts: { [system.getPublicKey()]: systemJwt, [account.getPublicKey()]: accountJwt },
    },
  });
  return {
    server,
    operator,
    operatorSigningKey,
    account,
    accountSigningKey,
    systemCreds: new TextDecoder().decode(fmtCreds(sysUserJwt, sysUser)),
    seedOf,
  };
}
