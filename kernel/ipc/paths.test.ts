import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  symlinkSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  assertRunDirSafe,
  ensureRunDir,
  readTokenFile,
  runtimePaths,
  UnsafeRunDirError,
  writeTokenFile,
} from "./paths.js";

let home: string;
beforeEach(() => {
  home = mkdtempSync(path.join(os.tmpdir(), "astrid-paths-"));
});
afterEach(() => rmSync(home, { recursive: true, force: true }));

describe("runtimePaths", () => {
  it("puts socket, token and lock under <home>/run", () => {
    expect(runtimePaths("/h/.astrid")).toEqual({
      home: "/h/.astrid",
      runDir: "/h/.astrid/run",
      socket: "/h/.astrid/run/daemon.sock",
      tokenFile: "/h/.astrid/run/daemon.token",
      lockFile: "/h/.astrid/run/daemon.lock",
    });
  });

  it("creates the run dir with mode 0700 whatever the umask", () => {
    const old = process.umask(0o000);
    try {
      ensureRunDir(runtimePaths(home));
    } finally {
      process.umask(old);
    }
    expect(statSync(path.join(home, "run")).mode & 0o777).toBe(0o700);
  });

  it("refuses an existing run dir open to others, saying how to fix it", () => {
    const runDir = path.join(home, "run");
    mkdirSync(runDir);
    chmodSync(runDir, 0o755);
    expect(() => ensureRunDir(runtimePaths(home))).toThrow(
      new UnsafeRunDirError(
        `${runDir} has mode 0755; it must be 0700 so no other user can reach the daemon: run \`chmod 700 ${runDir}\``,
      ),
    );
  });

  // Only root can give a directory away.
  it.skipIf(process.getuid?.() !== 0)("refuses a run dir owned by another user", () => {
    const uid = process.getuid!();
    const runDir = path.join(home, "run");
    mkdirSync(runDir, { mode: 0o700 });
    chownSync(runDir, 65534, 65534);
    expect(() => assertRunDirSafe(runDir)).toThrow(
      `${runDir} is owned by uid 65534, not by you (uid ${uid}): remove it, or run \`chown ${uid} ${runDir}\` if it is yours`,
    );
  });

  it("refuses a run dir that is a symlink", () => {
    const elsewhere = path.join(home, "elsewhere");
    mkdirSync(elsewhere, { mode: 0o700 });
    const runDir = path.join(home, "run");
    symlinkSync(elsewhere, runDir);
    expect(() => ensureRunDir(runtimePaths(home))).toThrow(
      `${runDir} is not a directory (a symlink or file there could redirect the daemon socket): remove it and run the command again`,
    );
  });

  it("refuses a home whose socket path is too long for a Unix socket", () => {
    const deep = path.join(home, "x".repeat(100));
    const socket = path.join(deep, "run", "daemon.sock");
    expect(() => ensureRunDir(runtimePaths(deep))).toThrow(
      `socket path ${socket} is ${Buffer.byteLength(socket)} bytes; Unix sockets allow 107: use a shorter ASTRID_HOME`,
    );
  });
});

describe("token file", () => {
  it("holds 32 random bytes as base64url with mode 0600, fresh each time", () => {
    const paths = runtimePaths(home);
    ensureRunDir(paths);
    const a = writeTokenFile(paths);
    expect(statSync(paths.tokenFile).mode & 0o777).toBe(0o600);
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(a, "base64url")).toHaveLength(32);
    expect(readTokenFile(paths)).toBe(a);
    const b = writeTokenFile(paths);
    expect(b).not.toBe(a);
    expect(readTokenFile(paths)).toBe(b);
  });
});
