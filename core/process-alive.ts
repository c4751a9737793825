/**
 * Whether a process with this pid exists. Lock files (the audit chain's writer lock, the
 * daemon's home lock) use it to tell a stale lock from a live holder. EPERM means a process
 * exists that we may not signal: alive, so the lock is respected (fail closed).
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
