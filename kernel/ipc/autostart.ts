/**
 * `astrid <anything>` with no daemon running starts one. Several CLIs may do so at once; the
 * daemon lock decides who serves, every loser's daemon exits, and every CLI connects to the one
 * winner — so racing commands never leave two daemons fighting over one home.
 */
import { lstatSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { DaemonClient, DaemonNotRunningError } from "./client.js";
import { inspectLock, unlinkIfExists } from "./lock.js";
import { runtimePaths } from "./paths.js";

/** What ensureDaemon needs of a spawned daemon: a node ChildProcess fits. */
export interface SpawnedDaemon {
  readonly pid?: number | undefined;
  unref?(): void;
  once(
    event: "exit",
    listener: (code: number | null, signal: NodeJS.Signals | null) => void,
  ): unknown;
}

export interface EnsureDaemonOptions {
  readonly home: string;
  /**
   * Starts `astrid-daemon` for this home, detached (`detached: true`, stdio not tied to the CLI)
   * so it outlives the command. Called at most once. May be async, so a caller can load what
   * spawning needs only when a daemon is actually missing.
   */
  readonly spawnDaemon: () => SpawnedDaemon | Promise<SpawnedDaemon>;
  /** Bound on the whole wait, spawn included. Default 10 000 ms. */
  readonly timeoutMs?: number;
  readonly client?: string;
}

// A daemon takes a few hundred milliseconds to come up, and every millisecond between its first
// answer and our next try is added to a cold `astrid -p` (issue 5: under 1 s). A failed try is
// an lstat and a refused connect, so trying often costs next to nothing.
const FIRST_POLL_MS = 10;
const MAX_POLL_MS = 25;

export class DaemonStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DaemonStartError";
  }
}

/** Connects to the home's daemon, starting it first if none is running. */
export async function ensureDaemon(opts: EnsureDaemonOptions): Promise<DaemonClient> {
  const paths = runtimePaths(opts.home);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  const connect = () =>
    DaemonClient.connect({
      home: opts.home,
      timeoutMs: Math.max(1, Math.min(2000, deadline - Date.now())),
      ...(opts.client === undefined ? {} : { client: opts.client }),
    });

  let spawned: { exit?: string } | undefined;
  let delay = FIRST_POLL_MS;
  for (;;) {
    try {
      return await connect();
    } catch (err) {
      if (!(err instanceof DaemonNotRunningError)) throw err;
    }
    const socketIno = inodeOf(paths.socket);
    const lock = inspectLock(paths);
    if (lock.kind !== "held") {
      if (spawned?.exit !== undefined) {
        throw new DaemonStartError(
          `astrid-daemon exited (${spawned.exit}) before it answered on ${paths.socket}`,
        );
      }
      if (!spawned) {
        removeStaleSocket(paths.socket, socketIno);
        spawned = {};
        const record = spawned;
        const child = await opts.spawnDaemon();
        child.once("exit", (code, signal) => {
          record.exit = signal ? `signal ${signal}` : `code ${code}`;
        });
        child.unref?.();
      }
    }
    if (Date.now() >= deadline) {
      const holder =
        lock.kind === "held"
          ? `; pid ${lock.record.pid} holds the lock but does not answer: stop it with \`kill ${lock.record.pid}\``
          : "";
      throw new DaemonStartError(
        `astrid-daemon did not answer on ${paths.socket} within ${timeoutMs} ms${holder}`,
      );
    }
    await sleep(Math.min(delay, Math.max(1, deadline - Date.now())));
    delay = Math.min(delay * 1.5, MAX_POLL_MS);
  }
}

/**
 * Called only when no live daemon holds the lock: the socket then belongs to a dead one. The
 * inode is compared across the lock check so a socket that a just-started daemon put there in the
 * meantime is not the one removed. (The daemon clears a stale socket itself when it takes the
 * lock; removing it here only spares the next command the ECONNREFUSED.)
 */
function removeStaleSocket(socket: string, seenBeforeLockCheck: number | undefined): void {
  if (seenBeforeLockCheck !== undefined && inodeOf(socket) === seenBeforeLockCheck) {
    unlinkIfExists(socket);
  }
}

function inodeOf(file: string): number | undefined {
  try {
    return lstatSync(file).ino;
  } catch {
    return undefined;
  }
}
