/**
 * Installing a package into a content-checked store: `<store>/<name>/<version>/`, read-only.
 *
 * A name+version is immutable once installed: installing different bytes under the same
 * version is refused (a silently replaced capsule is how a supply-chain attack hides), and
 * installing the same bytes again is a no-op. Files are staged next to the target and moved
 * in with one rename, so a crash never leaves a half-written version that looks installed.
 */

import { randomBytes } from "node:crypto";
import { chmod, copyFile, lstat, mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { loadManifest } from "../manifest/parse.js";
import { unpackArchive } from "./archive.js";
import { digestPackage, listPackageFiles } from "./digest.js";
import { PackageError } from "./errors.js";
import { DEFAULT_LIMITS, type PackageLimits } from "./limits.js";

export interface InstalledPackage {
  readonly name: string;
  readonly version: string;
  readonly digest: string;
  readonly dir: string;
  /** False when the same digest was already installed. */
  readonly installed: boolean;
}

export interface InstallOptions {
  /** Refuse the package unless its digest is exactly this (e.g. from a lock file). */
  readonly expectedDigest?: string;
  readonly limits?: PackageLimits;
}

async function copyTree(src: string, dest: string, limits: PackageLimits): Promise<void> {
  await mkdir(dest, { recursive: true });
  for (const f of await listPackageFiles(src, limits)) {
    const target = join(dest, f.path);
    await mkdir(dirname(target), { recursive: true });
    await copyFile(f.abs, target);
    await chmod(target, f.mode === 755 ? 0o755 : 0o644);
  }
}

/** Sets files to 0444/0555 and directories to 0555, deepest first. */
async function makeReadOnly(dir: string, limits: PackageLimits): Promise<void> {
  const files = await listPackageFiles(dir, limits);
  const dirs = new Set<string>();
  for (const f of files) {
    await chmod(f.abs, f.mode === 755 ? 0o555 : 0o444);
    let d = dirname(f.path);
    while (d !== "." && d !== "") {
      dirs.add(d);
      d = dirname(d);
    }
  }
  const sorted = [...dirs].sort((a, b) => b.length - a.length);
  for (const d of sorted) await chmod(join(dir, d), 0o555);
  await chmod(dir, 0o555);
}

/** Makes a tree writable again so it can be removed (read-only dirs block unlinking). */
async function forceRemove(dir: string): Promise<void> {
  const walk = async (d: string): Promise<void> => {
    let st: Awaited<ReturnType<typeof lstat>>;
    try {
      st = await lstat(d);
    } catch {
      return;
    }
    if (!st.isDirectory()) return;
    await chmod(d, 0o755);
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
    }
  };
  await walk(dir);
  await rm(dir, { recursive: true, force: true });
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

export async function installPackage(
  src: string,
  storeDir: string,
  options: InstallOptions = {},
): Promise<InstalledPackage> {
  const limits = options.limits ?? DEFAULT_LIMITS;
  await mkdir(storeDir, { recursive: true });
  const staging = join(storeDir, `.staging-${randomBytes(8).toString("hex")}`);
  try {
    const st = await stat(src).catch(() => {
      throw new PackageError("not-found", `${src}: no such package directory or .capsule archive`);
    });
    if (st.isDirectory()) await copyTree(src, staging, limits);
    else await unpackArchive(src, staging, limits);

    const { digest } = await digestPackage(staging, limits);
    if (st.isDirectory()) {
      // The copy must be exactly what was asked for; a file changing mid-copy is caught here.
      const original = await digestPackage(src, limits);
      if (original.digest !== digest) {
        throw new PackageError(
          "digest-mismatch",
          `${src}: changed while being installed (${original.digest} before, ${digest} after copying)`,
        );
      }
    }
    if (options.expectedDigest !== undefined && options.expectedDigest !== digest) {
      throw new PackageError(
        "digest-mismatch",
        `${src}: digest is ${digest}; expected ${options.expectedDigest}`,
      );
    }
    const manifest = await loadManifest(staging);
    const { name, version } = manifest.package;
    const target = join(storeDir, name, version);

    if (await exists(target)) return await sameOrConflict(target, name, version, digest);

    await makeReadOnly(staging, limits);
    await mkdir(join(storeDir, name), { recursive: true });
    try {
      await rename(staging, target);
    } catch (e) {
      // Another installer won the race: accept it only if it installed the same bytes.
      const code = (e as NodeJS.ErrnoException).code;
      if ((code === "ENOTEMPTY" || code === "EEXIST") && (await exists(target))) {
        return await sameOrConflict(target, name, version, digest);
      }
      throw e;
    }
    return { name, version, digest, dir: target, installed: true };
  } finally {
    await forceRemove(staging);
  }
}

async function sameOrConflict(
  target: string,
  name: string,
  version: string,
  digest: string,
): Promise<InstalledPackage> {
  const existing = await digestPackage(target);
  if (existing.digest !== digest) {
    throw new PackageError(
      "version-conflict",
      `${name}@${version} is already installed with ${existing.digest}; refusing a different package ${digest} under the same version (bump the version)`,
    );
  }
  return { name, version, digest, dir: target, installed: false };
}

/**
 * Checks an installed package still is what was installed: same digest and nothing writable
 * (a writable file in the store means something has been, or can be, changed behind our back).
 */
export async function verifyInstalled(dir: string, expectedDigest: string): Promise<void> {
  const { digest } = await digestPackage(dir);
  if (digest !== expectedDigest) {
    throw new PackageError(
      "digest-mismatch",
      `${dir}: digest is ${digest}; expected ${expectedDigest}`,
    );
  }
  for (const f of await listPackageFiles(dir)) {
    const st = await lstat(f.abs);
    if (st.mode & 0o222) {
      throw new PackageError(
        "writable",
        `${dir}: ${JSON.stringify(f.path)} is writable (mode ${(st.mode & 0o777).toString(8)}); expected read-only`,
      );
    }
  }
}

/** Removes `<store>/<name>/<version>` (the store's read-only modes would otherwise block it). */
export async function uninstallPackage(
  storeDir: string,
  name: string,
  version: string,
): Promise<void> {
  await forceRemove(join(storeDir, name, version));
}
