import { randomUUID } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AuditKeyring, verifyChain } from "../../core/audit/index.js";
import { KERNEL_KEY_ID } from "../cli/local-commands.js";
import { homeLayout, initHome, readHomeKey } from "../config/home.js";
import { DaemonClient } from "../ipc/client.js";
import type { DaemonMessage } from "../protocol.js";
import { CapsuleStore } from "../store.js";
import { Kernel } from "./daemon.js";

const FIXTURES = path.resolve("test/fixtures/capsules");
const CONFIG = `[defaults]
orchestrator = "echo-orchestrator"
provider = "wasm-tools"

[capsules]
enabled = ["echo-orchestrator", "wasm-tools"]

[providers.wasm-tools]
`;

let root: string;
let home: string;
let workspace: string;
let kernel: Kernel | undefined;
let client: DaemonClient | undefined;

function writeConfig(toml: string) {
  const file = homeLayout(home).config;
  writeFileSync(file, toml);
  chmodSync(file, 0o600);
}

beforeEach(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-kernel-"));
  home = path.join(root, "home");
  workspace = path.join(root, "ws");
  mkdirSync(workspace);
  await initHome(home);
  const store = new CapsuleStore(homeLayout(home).capsules);
  for (const c of ["echo-orchestrator", "wasm-tools"]) {
    await store.install(path.join(FIXTURES, c), path.join(home, "build"));
  }
  writeConfig(CONFIG);
});

afterEach(async () => {
  await client?.close();
  await kernel?.stop();
  client = undefined;
  kernel = undefined;
  rmSync(root, { recursive: true, force: true });
});

async function start() {
  kernel = await Kernel.start({ home, env: {}, log: () => {} });
  client = await DaemonClient.connect({ home });
}

/** One `astrid -p`: the session it ran in and the answer. */
async function prompt(text: string): Promise<{ session: string; text: string }> {
  let done: Extract<DaemonMessage, { type: "done" }> | undefined;
  for await (const m of client!.request({ type: "prompt", id: randomUUID(), text, workspace })) {
    if (m.type === "error") throw new Error(m.message);
    if (m.type === "done") done = m;
  }
  return { session: done!.session, text: done!.text };
}

const sessionsDir = () => homeLayout(home).sessions;
/** Session folders without meta.json: started, never announced (the prepared one). */
const unannounced = () =>
  readdirSync(sessionsDir()).filter((d) => !existsSync(path.join(sessionsDir(), d, "meta.json")));

async function until<T>(what: string, probe: () => T | undefined): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const v = probe();
    if (v !== undefined) return v;
    await sleep(20);
  }
  throw new Error(`gave up waiting for ${what}`);
}

describe("Kernel: sessions prepared ahead", () => {
  it("the next one-off prompt runs in the session prepared after the last, an ordinary session", async () => {
    await start();
    const first = await prompt("hello");
    expect(first.text).toBe("echo: hello (llm bound to wasm-tools)");
    const prepared = await until("a prepared session", () => unannounced()[0]);
    expect(prepared).not.toBe(first.session);

    const second = await prompt("hello again");
    expect(second).toEqual({
      session: prepared,
      text: "echo: hello again (llm bound to wasm-tools)",
    });
    // Each prompt got its own session; the prepared one is listed only once it is used.
    const listed = [] as string[];
    for await (const m of client!.request({ type: "session.list", id: randomUUID() })) {
      if (m.type === "result") listed.push(...(m.data as { id: string }[]).map((s) => s.id));
    }
    expect(listed.sort()).toEqual([first.session, second.session].sort());

    // The next one is being prepared; stopping the daemon discards it and its folder.
    const next = await until("the next prepared session", () =>
      unannounced().find((d) => d !== prepared),
    );
    await client!.close();
    client = undefined;
    await kernel!.stop();
    kernel = undefined;
    expect(existsSync(path.join(sessionsDir(), next))).toBe(false);
    expect(unannounced()).toEqual([]);

    // The taken session's audit chains, begun before its prompt arrived, verify.
    const keyring = new AuditKeyring([
      [KERNEL_KEY_ID, await readHomeKey(homeLayout(home).kernelKey)],
    ]);
    for (const c of ["echo-orchestrator", "wasm-tools"]) {
      const v = await verifyChain(path.join(sessionsDir(), second.session, "audit", c), keyring);
      expect(v.ok, c).toBe(true);
    }
  });

  it("a session prepared before config.toml changed is discarded, not used", async () => {
    await start();
    await prompt("hello");
    const stale = await until("a prepared session", () => unannounced()[0]);
    writeConfig(`[approvals]\ntimeout_seconds = 30\n\n${CONFIG}`);
    const after = await prompt("hello");
    expect(after.session).not.toBe(stale);
    await until("the stale session's folder to go", () =>
      existsSync(path.join(sessionsDir(), stale)) ? undefined : true,
    );
  });
});
