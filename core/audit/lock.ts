/**
 * The exclusive-writer lock of a chain directory. Two writers appending to one chain would both
 * link to the same last hash and fork it, so a writer must hold `writer.lock` for as long as it
 * is open.
 *
 * The lock file is written completely under a temporary name and then hard-linked into place
 * (link fails with EEXIST if a lock exists), so a lock is never seen half-written. A lock whose
 * process is dead on this host is stale and taken over; a lock from another host cannot be
 * checked and is refused (fail closed: an operator removes it after making sure that writer is
 * gone). A lock naming this very pid that this process does not hold is stale too: in a container
 * the writer is often pid 1 again after a restart. Residual risks, accepted: pid reuse on this host, and two writers taking over the same
 * stale lock within microseconds of each other (the content is re-read just before removal).
 */

import { link, readFile, unlink, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import path from "node:path";
import { processAlive } from "../process-alive.js";
import { AuditLockedError } from "./errors.js";

export const LOCK_FILE = "writer.lock";

/** Lock files held by this process (so a lock naming our own pid can be told apart). */
const heldHere = new Set<string>();

export interface WriterLock {
  readonly path: string;
  release(): Promise<void>;
}

export async function acquireWriterLock(dir: string): Promise<WriterLock> {
  const lockPath = path.join(dir, LOCK_FILE);
  const host = hostname();
  const content = `${process.pid} ${host}\n`;
  const tmp = path.join(dir, `${LOCK_FILE}.${process.pid}.${Date.now()}.tmp`);
  await writeFile(tmp, content, { flag: "wx" });
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await link(tmp, lockPath);
        heldHere.add(lockPath);
        return {
          path: lockPath,
          release: async () => {
            heldHere.delete(lockPath);
            // Only remove our own lock: never one a later writer took over.
            const now = await readFile(lockPath, "utf8").catch(() => null);
            if (now === content) await unlink(lockPath).catch(() => {});
          },
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      const held = await readFile(lockPath, "utf8").catch(() => null);
      if (held === null) continue; // removed between link and read: try again
      const [pidText, owner] = held.trim().split(" ");
      const pid = Number(pidText);
      if (owner !== host) {
        throw new AuditLockedError(
          `audit chain ${dir} is locked by pid ${pidText} on host ${owner} (${lockPath}); its liveness cannot be checked from ${host}: remove the lock only after that writer is stopped`,
        );
      }
      const ours = pid === process.pid;
      if (
        (ours && heldHere.has(lockPath)) ||
        (!ours && Number.isInteger(pid) && pid > 0 && processAlive(pid))
      ) {
        throw new AuditLockedError(
          `audit chain ${dir} is locked by running pid ${pid} (${lockPath}); a second writer would fork the chain`,
        );
      }
      const again = await readFile(lockPath, "utf8").catch(() => null);
      if (again === held) await unlink(lockPath).catch(() => {});
    }
    throw new AuditLockedError(
      `audit chain ${dir}: could not take over the stale lock ${lockPath}`,
    );
  } finally {
    await unlink(tmp).catch(() => {});
  }
}
