/**
 * The identity of a capsule package: `sha256:<hex>` over a canonical list of its files.
 *
 * Canonical list: every regular file, sorted bytewise by its POSIX path relative to the
 * package root, each contributing the line `<sha256 hex of content> <644|755> <path>\n`.
 * Only the executable bit of the mode counts (umask differences must not change identity,
 * but turning a data file into a program must). Symlinks, devices, sockets and FIFOs are
 * refused: a symlink in an installed package could point anywhere at load time.
 */

import { createHash } from "node:crypto";
import type { Dirent } from "node:fs";
import { lstat, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { PackageError } from "./errors.js";
import { DEFAULT_LIMITS, EXCLUDED_DIRS, type PackageLimits } from "./limits.js";
import { assertSafeRelativePath } from "./paths.js";

export interface PackageFile {
  /** POSIX path relative to the package root. */
  readonly path: string;
  readonly mode: 644 | 755;
  readonly size: number;
  /** sha256 of the content, hex. */
  readonly sha256: string;
}

export interface PackageDigest {
  /** `sha256:<hex>` */
  readonly digest: string;
  /** In canonical order. */
  readonly files: readonly PackageFile[];
}

interface Found {
  readonly path: string;
  readonly abs: string;
  readonly mode: 644 | 755;
  readonly size: number;
}

const describeType = (d: Dirent): string =>
  d.isSymbolicLink()
    ? "a symbolic link"
    : d.isSocket()
      ? "a socket"
      : d.isFIFO()
        ? "a FIFO"
        : d.isBlockDevice() || d.isCharacterDevice()
          ? "a device"
          : "not a regular file";

/** Lists the regular files of a package directory in canonical order, enforcing the limits. */
export async function listPackageFiles(
  root: string,
  limits: PackageLimits = DEFAULT_LIMITS,
): Promise<Found[]> {
  const found: Found[] = [];
  let total = 0;
  const walk = async (dir: string, rel: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      const path = rel === "" ? e.name : `${rel}/${e.name}`;
      assertSafeRelativePath(path, root);
      const abs = join(dir, e.name);
      if (e.isDirectory()) {
        if (EXCLUDED_DIRS.has(e.name)) continue;
        await walk(abs, path);
        continue;
      }
      if (!e.isFile()) {
        throw new PackageError(
          "unsupported-file-type",
          `${root}: refusing ${JSON.stringify(path)}: ${describeType(e)}; expected only regular files and directories`,
        );
      }
      // lstat, not stat: the entry must itself be the regular file, never a link to one.
      const st = await lstat(abs);
      if (!st.isFile()) {
        throw new PackageError(
          "unsupported-file-type",
          `${root}: refusing ${JSON.stringify(path)}: changed type while reading; expected a regular file`,
        );
      }
      total += st.size;
      if (found.length + 1 > limits.maxFiles) {
        throw new PackageError(
          "too-many-files",
          `${root}: more than ${limits.maxFiles} files; expected at most ${limits.maxFiles}`,
        );
      }
      if (total > limits.maxTotalBytes) {
        throw new PackageError(
          "too-large",
          `${root}: files total more than ${limits.maxTotalBytes} bytes; expected at most ${limits.maxTotalBytes}`,
        );
      }
      found.push({ path, abs, mode: st.mode & 0o111 ? 755 : 644, size: st.size });
    }
  };
  await walk(root, "");
  found.sort((a, b) => Buffer.compare(Buffer.from(a.path, "utf8"), Buffer.from(b.path, "utf8")));
  return found;
}

/** The canonical list text (what the digest hashes), for debugging a mismatch by diffing. */
export function canonicalList(files: readonly PackageFile[]): string {
  return files.map((f) => `${f.sha256} ${f.mode} ${f.path}\n`).join("");
}

export async function digestPackage(
  dir: string,
  limits: PackageLimits = DEFAULT_LIMITS,
): Promise<PackageDigest> {
  const found = await listPackageFiles(dir, limits);
  const files: PackageFile[] = [];
  for (const f of found) {
    const content = await readFile(f.abs);
    files.push({
      path: f.path,
      mode: f.mode,
      size: content.length,
      sha256: createHash("sha256").update(content).digest("hex"),
    });
  }
  const digest = createHash("sha256").update(canonicalList(files), "utf8").digest("hex");
  return { digest: `sha256:${digest}`, files };
}
