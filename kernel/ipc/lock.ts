/**
 * One daemon per home. The lock file is created atomically (written under a temporary name,
 * then hard-linked into place, which fails if it exists — O_EXCL semantics without the window
 * where the file exists but is still empty). It records the holder's pid and, on Linux, the
 * process start time: a pid alone can be reused by an unrelated process after a crash, which
 * would make a dead daemon look alive forever (upstream's orphaned-daemon reports, #769).
 */
import { randomBytes } from "node:crypto";
import { linkSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { processAlive } from "../../core/process-alive.js";
import type { RuntimePaths } from "./paths.js";

export interface LockRecord {
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot); null where /proc is absent. */
  readonly startTime: string | null;
}

export type LockState =
  | { readonly kind: "free" }
  | { readonly kind: "held"; readonly record: LockRecord }
  | { readonly kind: "stale"; readonly record: LockRecord | null; readonly why: string };

export class DaemonAlreadyRunningError extends Error {
  constructor(
    readonly pid: number,
    home: string,
  ) {
    super(`another astrid-daemon (pid ${pid}) is serving ${home}`);
    this.name = "DaemonAlreadyRunningError";
  }
}

export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

function parseRecord(text: string): LockRecord | null {
  try {
    const v = JSON.parse(text) as Partial<LockRecord>;
    if (typeof v.pid !== "number" || !Number.isInteger(v.pid) || v.pid <= 0) return null;
    return { pid: v.pid, startTime: typeof v.startTime === "string" ? v.startTime : null };
  } catch {
    return null;
  }
}

function readLock(lockFile: string): { text: string } | null {
  try {
    return { text: readFileSync(lockFile, "utf8") };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

/** Who holds the lock, judged without changing anything. */
export function inspectLock(paths: RuntimePaths): LockState {
  const read = readLock(paths.lockFile);
  if (!read) return { kind: "free" };
  return judge(read.text);
}

function judge(text: string): LockState {
  const record = parseRecord(text);
  if (!record) return { kind: "stale", record: null, why: "unreadable lock file" };
  if (!processAlive(record.pid)) return { kind: "stale", record, why: `pid ${record.pid} is dead` };
  const now = processStartTime(record.pid);
  if (record.startTime !== null && now !== null && now !== record.startTime) {
    return { kind: "stale", record, why: `pid ${record.pid} now belongs to another process` };
  }
  return { kind: "held", record };
}

export interface DaemonLock {
  readonly record: LockRecord;
  /** Whether the lock file still holds our record (someone may have removed or replaced it). */
  isHeld(): boolean;
  /** Removes the lock file if it is still ours. */
  release(): void;
}

export interface AcquireOptions {
  /** Called when a stale lock is removed, with the reason. */
  onStale?: (why: string, record: LockRecord | null) => void;
}

/** Takes the lock or throws DaemonAlreadyRunningError naming the live holder. */
export function acquireDaemonLock(paths: RuntimePaths, opts: AcquireOptions = {}): DaemonLock {
  const record: LockRecord = { pid: process.pid, startTime: processStartTime(process.pid) };
  // The nonce makes this acquisition's file unique, so release() never removes a successor's
  // lock even when the successor has the same pid (a restart in the same process).
  const text = `${JSON.stringify({ ...record, nonce: randomBytes(8).toString("hex") })}\n`;
  const tmp = `${paths.lockFile}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        linkSync(tmp, paths.lockFile);
        const isHeld = () => readLock(paths.lockFile)?.text === text;
        return {
          record,
          isHeld,
          release: () => {
            if (isHeld()) unlinkIfExists(paths.lockFile);
          },
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      const existing = readLock(paths.lockFile);
      if (!existing) continue;
      const state = judge(existing.text);
      if (state.kind === "held") throw new DaemonAlreadyRunningError(state.record.pid, paths.home);
      if (state.kind === "stale" && removeIfUnchanged(paths.lockFile, existing.text)) {
        opts.onStale?.(state.why, state.record);
      }
    }
  } finally {
    unlinkIfExists(tmp);
  }
  throw new Error(`could not take the daemon lock ${paths.lockFile}: it keeps changing`);
}

/**
 * Removes a stale lock only if it still holds what we judged stale. Renaming first makes the
 * check-and-remove safe against a racing daemon that replaced the stale lock with its own live
 * one in the meantime: if what we moved aside is not the stale text, it goes back.
 */
function removeIfUnchanged(lockFile: string, staleText: string): boolean {
  const aside = `${lockFile}.${process.pid}.${randomBytes(4).toString("hex")}.stale`;
  try {
    renameSync(lockFile, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
  const moved = readLock(aside)?.text;
  if (moved === staleText) {
    unlinkIfExists(aside);
    return true;
  }
  try {
    linkSync(aside, lockFile);
  } catch {
    // Someone took the lock in between; their lock stands, and so does the refusal below.
  }
  unlinkIfExists(aside);
  return false;
}

export function unlinkIfExists(file: string): void {
  try {
    unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}
