import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { acquireDaemonLock, DaemonAlreadyRunningError, inspectLock } from "./lock.js";
import { ensureRunDir, type RuntimePaths, runtimePaths } from "./paths.js";

const ECHO_DAEMON = path.resolve("test/fixtures/daemon/echo-daemon.ts");

let home: string;
let paths: RuntimePaths;
beforeEach(() => {
  home = mkdtempSync(path.join(os.tmpdir(), "astrid-lock-"));
  paths = runtimePaths(home);
  ensureRunDir(paths);
});
afterEach(() => rmSync(home, { recursive: true, force: true }));

describe("daemon lock", () => {
  it("records our pid and refuses a second holder while we live", () => {
    const lock = acquireDaemonLock(paths);
    expect(JSON.parse(readFileSync(paths.lockFile, "utf8")).pid).toBe(process.pid);
    expect(inspectLock(paths)).toEqual({ kind: "held", record: lock.record });
    expect(() => acquireDaemonLock(paths)).toThrow(
      new DaemonAlreadyRunningError(process.pid, paths.home),
    );
    lock.release();
    expect(existsSync(paths.lockFile)).toBe(false);
    expect(inspectLock(paths)).toEqual({ kind: "free" });
  });

  it("treats an unreadable lock as stale and says why", () => {
    writeFileSync(paths.lockFile, "garbage");
    const stale: string[] = [];
    const lock = acquireDaemonLock(paths, { onStale: (why) => stale.push(why) });
    expect(stale).toEqual(["unreadable lock file"]);
    lock.release();
  });

  it("release leaves alone a lock that is no longer ours", () => {
    const lock = acquireDaemonLock(paths);
    const other = JSON.stringify({ pid: 1, startTime: null });
    writeFileSync(paths.lockFile, other);
    lock.release();
    expect(readFileSync(paths.lockFile, "utf8")).toBe(other);
  });

  it("leaves no temporary files behind", () => {
    acquireDaemonLock(paths);
    expect(() => acquireDaemonLock(paths)).toThrow(DaemonAlreadyRunningError);
    expect(readdirSync(paths.runDir)).toEqual(["daemon.lock"]);
  });

  it("four daemons racing over a stale lock: exactly one serves, the others refuse", async () => {
    const dead = spawnSync(process.execPath, ["-e", ""]).pid!;
    writeFileSync(paths.lockFile, JSON.stringify({ pid: dead, startTime: null }));
    const daemons = Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, ["--import", "tsx", ECHO_DAEMON, "--home", home], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let err = "";
      child.stderr!.on("data", (d) => {
        err += d;
      });
      const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
      return { child, exited, err: () => err };
    });
    // Each daemon either exits (refused) or prints "ready" (serving).
    const outcomes = await Promise.all(
      daemons.map((d) =>
        Promise.race([
          d.exited.then(() => "exited" as const),
          new Promise<"ready">((r) => d.child.stdout!.once("data", () => r("ready"))),
        ]),
      ),
    );
    const exited = daemons.filter((_, i) => outcomes[i] === "exited");
    const serving = daemons.filter((_, i) => outcomes[i] === "ready");
    expect(serving).toHaveLength(1);
    const winner = serving[0]!.child.pid;
    for (const d of exited) {
      expect(await d.exited).toBe(3);
      expect(d.err()).toBe(`another astrid-daemon (pid ${winner}) is serving ${paths.home}\n`);
    }
    expect(JSON.parse(readFileSync(paths.lockFile, "utf8")).pid).toBe(winner);
    serving[0]!.child.kill("SIGTERM");
    expect(await serving[0]!.exited).toBe(0);
    expect(existsSync(paths.lockFile)).toBe(false);
  });
});
