import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createAccount, createOperator, createUser } from "@nats-io/nkeys";
import { afterAll, describe, expect, it } from "vitest";
import type { KubeRest } from "../runtime/rest.js";
import { natsAccountEnv, openNatsUsers } from "./config.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "astrid-nats-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
};
const seed = (kp: { getSeed(): Uint8Array }) => new TextDecoder().decode(kp.getSeed());

describe("natsAccountEnv", () => {
  it("is off when none of the four is set", () => {
    const problems: string[] = [];
    expect(natsAccountEnv({}, problems)).toBeUndefined();
    expect(problems).toEqual([]);
  });

  it("refuses a partial set, naming what is missing", () => {
    const problems: string[] = [];
    expect(
      natsAccountEnv({ ASTRID_NATS_ACCOUNT: "A", ASTRID_NATS_ACCOUNT_SEED_FILE: "/s" }, problems),
    ).toBeUndefined();
    expect(problems).toEqual([
      "per-capsule NATS users need all of ASTRID_NATS_ACCOUNT, ASTRID_NATS_ACCOUNT_SEED_FILE, ASTRID_NATS_OPERATOR_SEED_FILE, ASTRID_NATS_SYSTEM_CREDS_FILE; missing ASTRID_NATS_OPERATOR_SEED_FILE, ASTRID_NATS_SYSTEM_CREDS_FILE",
    ]);
  });

  it("reads all four", () => {
    const problems: string[] = [];
    expect(
      natsAccountEnv(
        {
          ASTRID_NATS_ACCOUNT: "A1",
          ASTRID_NATS_ACCOUNT_SEED_FILE: "/a",
          ASTRID_NATS_OPERATOR_SEED_FILE: "/o",
          ASTRID_NATS_SYSTEM_CREDS_FILE: "/s",
        },
        problems,
      ),
    ).toEqual({
      account: "A1",
      accountSeedFile: "/a",
      operatorSeedFile: "/o",
      systemCredsFile: "/s",
    });
    expect(problems).toEqual([]);
  });
});

describe("openNatsUsers", () => {
  const rest = {} as KubeRest;
  const account = createAccount();
  const cfg = {
    account: account.getPublicKey(),
    accountSeedFile: file("account.seed", `${seed(account)}\n`),
    operatorSeedFile: file("operator.seed", seed(createOperator())),
    systemCredsFile: file("sys.creds", "unused until the first revocation"),
  };

  it("opens with the right kinds of keys, without connecting to NATS", async () => {
    const opened = await openNatsUsers(cfg, rest, "nats://127.0.0.1:1");
    await opened.close();
  });

  it("refuses the wrong kind of key at start, not at the first Capsule", async () => {
    await expect(
      openNatsUsers(
        { ...cfg, accountSeedFile: file("user.seed", seed(createUser())) },
        rest,
        "nats://127.0.0.1:1",
      ),
    ).rejects.toThrow("NATS account signing key: expected an account nkey seed (SA…)");
    await expect(
      openNatsUsers({ ...cfg, operatorSeedFile: cfg.accountSeedFile }, rest, "nats://127.0.0.1:1"),
    ).rejects.toThrow("NATS operator signing key: expected an operator nkey seed (SO…)");
    await expect(
      openNatsUsers({ ...cfg, systemCredsFile: path.join(dir, "absent") }, rest, "nats://x:1"),
    ).rejects.toThrow(/^ASTRID_NATS_SYSTEM_CREDS_FILE: cannot read .*absent: ENOENT/);
  });
});
