/**
 * `~/.astrid`: where the local kernel keeps its config, keys, installed capsules, sessions,
 * socket and logs.
 *
 * Everything is private to the user: directories 0700, key files 0600. The keys sign the audit
 * chain and mint capability tokens, so anyone who can read them can forge both. `initHome`
 * creates what is missing and never overwrites: a key that exists is kept even if it is
 * unusable (the error says so), because replacing it silently would orphan every token and
 * audit seal made with it.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { constants } from "node:fs";
import { chmod, lstat, mkdir, open, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { journalPath } from "../../core/security/budget/journal.js";
import { AstridHomeError } from "./astrid-home.js";
import { STARTER_CONFIG } from "./starter-config.js";

export { AstridHomeError, astridHome, type Env } from "./astrid-home.js";

export interface HomeLayout {
  readonly home: string;
  /** The user's config.toml. */
  readonly config: string;
  /**
   * Lasting approval grants (`allow_workspace`, `allow_always`; core/security/approval's grant
   * file). At the home, not per session: they outlive the session that made them.
   */
  readonly grants: string;
  /** Private keys, 0700. */
  readonly keys: string;
  /** Ed25519 identity of the local kernel (PKCS#8 PEM, 0600): signs the audit chain. */
  readonly kernelKey: string;
  /** Ed25519 key that signs capability tokens (PKCS#8 PEM, 0600). */
  readonly issuerKey: string;
  /** Installed capsule packages. */
  readonly capsules: string;
  /** One folder per session (see sessionLayout). */
  readonly sessions: string;
  /** The daemon's socket and token file; the names inside belong to kernel/ipc/paths.ts. */
  readonly run: string;
  readonly logs: string;
  /**
   * Capsules' kv stores, one folder per capsule (`state/kv/<capsule>/`, kernel/daemon/kv-stores.ts),
   * made when a capsule first needs one. At the home, not per session: a cache outlives the session.
   */
  readonly kv: string;
}

export function homeLayout(home: string): HomeLayout {
  const keys = join(home, "keys");
  return {
    home,
    config: join(home, "config.toml"),
    grants: join(home, "grants.json"),
    keys,
    kernelKey: join(keys, "kernel.pem"),
    issuerKey: join(keys, "issuer.pem"),
    capsules: join(home, "capsules"),
    sessions: join(home, "sessions"),
    run: join(home, "run"),
    logs: join(home, "logs"),
    kv: join(home, "state", "kv"),
  };
}

export interface SessionLayout {
  readonly id: string;
  readonly dir: string;
  /** Messages of the session, JSON Lines. */
  readonly transcript: string;
  /** Token and money totals, for `astrid session info`. */
  readonly usage: string;
  /** The budget ledger's journal (core/security/budget/journal.ts names it). */
  readonly budgetJournal: string;
  /** Audit chain segments. */
  readonly audit: string;
}

/** Session ids become folder names (`--session` comes from the command line): no `/`, no `..`. */
const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function sessionLayout(layout: HomeLayout, id: string): SessionLayout {
  if (!SESSION_ID.test(id)) {
    throw new AstridHomeError(
      `session id ${JSON.stringify(id)} cannot name a session folder: expected 1–128 characters of [A-Za-z0-9._-], starting with a letter or digit`,
    );
  }
  const dir = join(layout.sessions, id);
  return {
    id,
    dir,
    transcript: join(dir, "transcript.jsonl"),
    usage: join(dir, "usage.json"),
    budgetJournal: journalPath(dir, id),
    audit: join(dir, "audit"),
  };
}

export interface InitReport {
  /** Paths created by this call, in creation order. */
  readonly created: readonly string[];
  /** Existing paths whose permissions were narrowed to 0700 (folders) or 0600 (keys). */
  readonly tightened: readonly string[];
}

const DIR_MODE = 0o700;
const KEY_MODE = 0o600;

/** Creates the layout of `home` where missing. Safe to run any number of times. */
export async function initHome(home: string): Promise<InitReport> {
  const layout = homeLayout(home);
  const created: string[] = [];
  const tightened: string[] = [];
  const dirs = [layout.keys, layout.capsules, layout.sessions, layout.run, layout.logs];

  // The home itself may be a symlink (a user moving it to another disk); its contents may not.
  await ensureDir(home, true, created, tightened);
  for (const d of dirs) await ensureDir(d, false, created, tightened);
  for (const key of [layout.kernelKey, layout.issuerKey]) {
    await ensureKey(key, created, tightened);
  }
  if (await createExclusive(layout.config, STARTER_CONFIG, KEY_MODE)) created.push(layout.config);
  return { created, tightened };
}

/**
 * Reads a key `initHome` made. Refused when others can read it (like ssh's "unprotected
 * private key file"): a key others could have copied cannot vouch for this kernel.
 */
export async function readHomeKey(path: string): Promise<KeyObject> {
  const st = await lstat(path);
  if (!st.isFile()) throw new AstridHomeError(`${path} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw new AstridHomeError(
      `${path} is readable by others (mode ${octal(st.mode)}); run chmod 600 ${path}`,
    );
  }
  return parseEd25519(path, await readFile(path, "utf8"));
}

function parseEd25519(path: string, pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new AstridHomeError(
      `${path} is not a PEM private key; it is kept as it is: move it away to have a new one generated`,
    );
  }
  if (key.asymmetricKeyType !== "ed25519") {
    throw new AstridHomeError(
      `${path} is a ${key.asymmetricKeyType ?? "unknown"} key, expected ed25519; it is kept as it is: move it away to have a new one generated`,
    );
  }
  return key;
}

const octal = (mode: number): string => `0${(mode & 0o777).toString(8)}`;

async function ensureDir(
  path: string,
  isHome: boolean,
  created: string[],
  tightened: string[],
): Promise<void> {
  if (isHome) {
    // recursive: ASTRID_HOME may name a folder whose parents do not exist yet.
    if ((await mkdir(path, { mode: DIR_MODE, recursive: true })) !== undefined) {
      created.push(path);
      return;
    }
  } else {
    try {
      await mkdir(path, { mode: DIR_MODE });
      created.push(path);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  }
  const st = isHome ? await stat(path) : await lstat(path);
  if (!st.isDirectory()) {
    throw new AstridHomeError(
      `${path} exists and is not a directory${st.isSymbolicLink() ? " (a symlink)" : ""}: Astrid keeps private state there, so it must be a real folder`,
    );
  }
  assertOwned(path, st.uid);
  if ((st.mode & 0o077) !== 0) {
    await chmod(path, DIR_MODE);
    tightened.push(path);
  }
}

async function ensureKey(path: string, created: string[], tightened: string[]): Promise<void> {
  const { privateKey } = generateKeyPairSync("ed25519");
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  if (await createExclusive(path, pem, KEY_MODE)) {
    created.push(path);
    return;
  }
  const st = await lstat(path);
  if (!st.isFile()) {
    throw new AstridHomeError(
      `${path} exists and is not a regular file${st.isSymbolicLink() ? " (a symlink)" : ""}; it is kept as it is: move it away to have a new key generated`,
    );
  }
  assertOwned(path, st.uid);
  parseEd25519(path, await readFile(path, "utf8"));
  if ((st.mode & 0o077) !== 0) {
    await chmod(path, KEY_MODE);
    tightened.push(path);
  }
}

/**
 * Writes a new file only if nothing is at `path` (O_EXCL, which also refuses a symlink planted
 * there), synced before returning so a crash cannot leave an empty key behind a valid name.
 */
async function createExclusive(path: string, content: string, mode: number): Promise<boolean> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(
      path,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      mode,
    );
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  }
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return true;
}

function assertOwned(path: string, uid: number): void {
  const me = process.getuid?.();
  // Another user's folder or key could be swapped or read by them at will.
  if (me !== undefined && uid !== me) {
    throw new AstridHomeError(`${path} belongs to uid ${uid}, not to this user (uid ${me})`);
  }
}
