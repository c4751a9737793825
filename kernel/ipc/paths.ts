/**
 * Where the daemon's runtime files live, and the permissions that make them trustworthy. The
 * socket is the daemon's only door: anyone who can reach it can run prompts as the user, and
 * anyone who can plant a socket there can impersonate the daemon and read the user's prompts.
 * So the run directory must be ours and closed to everyone else, and we refuse (fail closed)
 * rather than repair a directory someone else may already have tampered with.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, lstatSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface RuntimePaths {
  readonly home: string;
  readonly runDir: string;
  readonly socket: string;
  readonly tokenFile: string;
  /** Created with O_EXCL by the daemon that serves this home; holds its pid (and start time). */
  readonly lockFile: string;
}

/** Linux's sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

export function runtimePaths(astridHome: string): RuntimePaths {
  const home = path.resolve(astridHome);
  const runDir = path.join(home, "run");
  return {
    home,
    runDir,
    socket: path.join(runDir, "daemon.sock"),
    tokenFile: path.join(runDir, "daemon.token"),
    lockFile: path.join(runDir, "daemon.lock"),
  };
}

export class UnsafeRunDirError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnsafeRunDirError";
  }
}

function currentUid(): number | undefined {
  return typeof process.getuid === "function" ? process.getuid() : undefined;
}

/**
 * Refuses a run directory that is a symlink, not a directory, owned by someone else, or open to
 * group/others. Used by the client too, so it never talks to a socket an attacker could plant.
 */
export function assertRunDirSafe(runDir: string): void {
  const st = lstatSync(runDir);
  if (st.isSymbolicLink() || !st.isDirectory()) {
    throw new UnsafeRunDirError(
      `${runDir} is not a directory (a symlink or file there could redirect the daemon socket): remove it and run the command again`,
    );
  }
  const uid = currentUid();
  if (uid !== undefined && st.uid !== uid) {
    throw new UnsafeRunDirError(
      `${runDir} is owned by uid ${st.uid}, not by you (uid ${uid}): remove it, or run \`chown ${uid} ${runDir}\` if it is yours`,
    );
  }
  const mode = st.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new UnsafeRunDirError(
      `${runDir} has mode ${mode.toString(8).padStart(4, "0")}; it must be 0700 so no other user can reach the daemon: run \`chmod 700 ${runDir}\``,
    );
  }
}

/** Creates `<home>/run` with mode 0700 if missing, then checks it (see assertRunDirSafe). */
export function ensureRunDir(paths: RuntimePaths): void {
  mkdirSync(paths.home, { recursive: true, mode: 0o700 });
  try {
    mkdirSync(paths.runDir, { mode: 0o700 });
    // The umask may have masked bits off, never on; chmod makes the mode exact either way.
    chmodSync(paths.runDir, 0o700);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  assertRunDirSafe(paths.runDir);
  assertSocketPathFits(paths.socket);
}

export function assertSocketPathFits(socket: string): void {
  const bytes = Buffer.byteLength(socket);
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    throw new Error(
      `socket path ${socket} is ${bytes} bytes; Unix sockets allow ${MAX_SOCKET_PATH_BYTES}: use a shorter ASTRID_HOME`,
    );
  }
}

/**
 * Writes a fresh token (32 random bytes, base64url) with mode 0600. Written to a temporary name
 * and renamed, so a client never reads half a token.
 */
export function writeTokenFile(paths: RuntimePaths): string {
  const token = randomBytes(32).toString("base64url");
  const tmp = `${paths.tokenFile}.${process.pid}.tmp`;
  writeFileSync(tmp, `${token}\n`, { mode: 0o600, flag: "w" });
  chmodSync(tmp, 0o600);
  renameSync(tmp, paths.tokenFile);
  return token;
}

export function readTokenFile(paths: RuntimePaths): string {
  return readFileSync(paths.tokenFile, "utf8").trim();
}
