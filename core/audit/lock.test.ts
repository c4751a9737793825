import { spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AuditLockedError } from "./errors.js";
import { acquireWriterLock, LOCK_FILE } from "./lock.js";
import { tempDir } from "./test-fixtures.js";

let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
});

async function dir(): Promise<string> {
  const t = await tempDir();
  cleanup = t.cleanup;
  return t.dir;
}

/** A pid that certainly belonged to a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]);
  return Number(r.stdout.toString());
}

describe("acquireWriterLock", () => {
  it("refuses a second writer while the first is alive", async () => {
    const d = await dir();
    const lock = await acquireWriterLock(d);
    expect(await readFile(path.join(d, LOCK_FILE), "utf8")).toBe(`${process.pid} ${hostname()}\n`);
    await expect(acquireWriterLock(d)).rejects.toThrow(
      new AuditLockedError(
        `audit chain ${d} is locked by running pid ${process.pid} (${path.join(d, LOCK_FILE)}); a second writer would fork the chain`,
      ),
    );
    await lock.release();
    const again = await acquireWriterLock(d);
    await again.release();
  });

  it("takes over a lock left by a dead process", async () => {
    const d = await dir();
    const pid = deadPid();
    await writeFile(path.join(d, LOCK_FILE), `${pid} ${hostname()}\n`);
    const lock = await acquireWriterLock(d);
    expect(await readFile(path.join(d, LOCK_FILE), "utf8")).toBe(`${process.pid} ${hostname()}\n`);
    await lock.release();
  });

  it("takes over a lock naming its own pid that it does not hold (a restarted container)", async () => {
    const d = await dir();
    await writeFile(path.join(d, LOCK_FILE), `${process.pid} ${hostname()}\n`);
    const lock = await acquireWriterLock(d);
    await expect(acquireWriterLock(d)).rejects.toBeInstanceOf(AuditLockedError);
    await lock.release();
  });

  it("refuses a lock from another host, whose liveness it cannot check", async () => {
    const d = await dir();
    await writeFile(path.join(d, LOCK_FILE), "4242 other-node\n");
    await expect(acquireWriterLock(d)).rejects.toThrow(
      `audit chain ${d} is locked by pid 4242 on host other-node (${path.join(d, LOCK_FILE)}); its liveness cannot be checked from ${hostname()}: remove the lock only after that writer is stopped`,
    );
  });

  it("release leaves a lock that is no longer its own", async () => {
    const d = await dir();
    const lock = await acquireWriterLock(d);
    await writeFile(path.join(d, LOCK_FILE), "1 someone-else\n");
    await lock.release();
    expect(await readFile(path.join(d, LOCK_FILE), "utf8")).toBe("1 someone-else\n");
  });
});
