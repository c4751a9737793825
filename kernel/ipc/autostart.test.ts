/**
 * ensureDaemon with real daemon processes (test/fixtures/daemon/echo-daemon.ts): racing CLIs end
 * with one daemon, a crashed daemon's leftovers do not block a new one, a daemon that dies at
 * start is reported.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DaemonStartError, ensureDaemon } from "./autostart.js";
import type { DaemonClient } from "./client.js";
import { runtimePaths } from "./paths.js";

const ECHO_DAEMON = path.resolve("test/fixtures/daemon/echo-daemon.ts");

interface Spawned {
  child: ChildProcess;
  stderr: string;
  exit: Promise<number | null>;
}

let home: string;
let spawned: Spawned[];
let clients: DaemonClient[];

function spawnEcho(): ChildProcess {
  const child = spawn(process.execPath, ["--import", "tsx", ECHO_DAEMON, "--home", home], {
    detached: true,
    stdio: ["ignore", "ignore", "pipe"],
  });
  const record: Spawned = {
    child,
    stderr: "",
    exit: new Promise((resolve) => child.once("exit", (code) => resolve(code))),
  };
  child.stderr!.on("data", (d) => {
    record.stderr += d;
  });
  spawned.push(record);
  return child;
}

function alive(s: Spawned): boolean {
  return s.child.exitCode === null && s.child.signalCode === null;
}

beforeEach(() => {
  home = mkdtempSync(path.join(os.tmpdir(), "astrid-auto-"));
  spawned = [];
  clients = [];
});
afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  for (const s of spawned) if (alive(s)) s.child.kill("SIGTERM");
  await Promise.all(spawned.map((s) => s.exit));
  rmSync(home, { recursive: true, force: true });
});

describe("ensureDaemon", () => {
  it("two racing CLIs end with exactly one daemon, and both talk to it", async () => {
    const [a, b] = await Promise.all([
      ensureDaemon({ home, spawnDaemon: spawnEcho, timeoutMs: 20_000 }),
      ensureDaemon({ home, spawnDaemon: spawnEcho, timeoutMs: 20_000 }),
    ]);
    clients.push(a, b);
    // Both saw no daemon and started one: the lock, not luck, decided.
    expect(spawned).toHaveLength(2);
    expect(a.welcome.daemonPid).toBe(b.welcome.daemonPid);
    const serving = spawned.filter((s) => s.child.pid === a.welcome.daemonPid);
    expect(serving).toHaveLength(1);
    // Every other daemon that was started lost the lock and said so.
    const losers = spawned.filter((s) => s !== serving[0]);
    for (const loser of losers) {
      expect(await loser.exit).toBe(3);
      expect(loser.stderr).toBe(
        `another astrid-daemon (pid ${a.welcome.daemonPid}) is serving ${path.resolve(home)}\n`,
      );
    }
    expect(spawned.filter(alive)).toHaveLength(1);
    for (const [client, id] of [
      [a, "a"],
      [b, "b"],
    ] as const) {
      const answers = [];
      for await (const m of client.request({ type: "status", id })) answers.push(m);
      expect(answers).toEqual([{ type: "result", id, data: { pid: a.welcome.daemonPid } }]);
    }
  });

  it("connects to a running daemon without starting another", async () => {
    const first = await ensureDaemon({ home, spawnDaemon: spawnEcho, timeoutMs: 20_000 });
    clients.push(first);
    const second = await ensureDaemon({
      home,
      spawnDaemon: () => {
        throw new Error("must not spawn");
      },
    });
    clients.push(second);
    expect(second.welcome.daemonPid).toBe(first.welcome.daemonPid);
    expect(spawned).toHaveLength(1);
  });

  it("replaces a daemon killed with SIGKILL, clearing its stale socket", async () => {
    const first = await ensureDaemon({ home, spawnDaemon: spawnEcho, timeoutMs: 20_000 });
    const deadPid = first.welcome.daemonPid;
    spawned[0]!.child.kill("SIGKILL");
    await spawned[0]!.exit;
    await first.closed;
    expect(existsSync(runtimePaths(home).socket)).toBe(true);
    const second = await ensureDaemon({ home, spawnDaemon: spawnEcho, timeoutMs: 20_000 });
    clients.push(second);
    expect(second.welcome.daemonPid).not.toBe(deadPid);
    expect(second.welcome.daemonPid).toBe(spawned[1]!.child.pid);
  });

  it("reports a daemon that exits before answering", async () => {
    const paths = runtimePaths(home);
    await expect(
      ensureDaemon({
        home,
        timeoutMs: 20_000,
        spawnDaemon: () => spawn(process.execPath, ["-e", "process.exit(7)"], { stdio: "ignore" }),
      }),
    ).rejects.toThrow(
      new DaemonStartError(`astrid-daemon exited (code 7) before it answered on ${paths.socket}`),
    );
  });

  it("a stop request ends the daemon and removes its files", async () => {
    const client = await ensureDaemon({ home, spawnDaemon: spawnEcho, timeoutMs: 20_000 });
    const answers = [];
    for await (const m of client.request({ type: "stop", id: "bye" })) answers.push(m);
    expect(answers).toEqual([{ type: "result", id: "bye", data: { stopping: true } }]);
    expect(await spawned[0]!.exit).toBe(0);
    const paths = runtimePaths(home);
    expect([paths.socket, paths.tokenFile, paths.lockFile].filter((f) => existsSync(f))).toEqual(
      [],
    );
  });
});
