/**
 * `.capsule` archives: a gzipped tar of the package directory.
 *
 * Packing is deterministic (canonical file order, fixed mtime, no owner, modes folded to
 * 644/755) so the same directory always gives the same bytes and archives can be compared or
 * signed. Unpacking trusts nothing in the archive: every entry is checked before anything is
 * written, and only regular files and directories are ever created — no links, devices or
 * paths outside the destination.
 */

import { mkdir, open, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { create, Parser, type ReadEntry, type WriteEntry } from "tar";
import { listPackageFiles } from "./digest.js";
import { PackageError } from "./errors.js";
import { DEFAULT_LIMITS, type PackageLimits } from "./limits.js";
import { assertSafeRelativePath } from "./paths.js";

/** Fixed entry time: a timestamp in the archive would make every pack differ. */
const ARCHIVE_MTIME = new Date("2000-01-01T00:00:00Z");

export async function packArchive(
  dir: string,
  outFile: string,
  limits: PackageLimits = DEFAULT_LIMITS,
): Promise<void> {
  const files = await listPackageFiles(dir, limits);
  const modes = new Map(files.map((f) => [f.path, f.mode]));
  await create(
    {
      file: outFile,
      cwd: dir,
      gzip: { level: 9 },
      portable: true,
      noDirRecurse: true,
      mtime: ARCHIVE_MTIME,
      onWriteEntry: (entry: WriteEntry) => {
        const mode = modes.get(entry.path);
        if (entry.stat && mode !== undefined) {
          entry.stat.mode = (entry.stat.mode & ~0o7777) | (mode === 755 ? 0o755 : 0o644);
        }
      },
    },
    files.map((f) => f.path),
  );
}

interface ArchiveFile {
  readonly path: string;
  readonly executable: boolean;
  readonly content: Buffer;
}

/** Parses a whole archive in memory, refusing anything that is not a plain file or directory. */
async function readArchive(
  data: Buffer,
  where: string,
  limits: PackageLimits,
): Promise<{ files: ArchiveFile[]; dirs: string[] }> {
  const files: ArchiveFile[] = [];
  const dirs: string[] = [];
  const seen = new Set<string>();
  let total = 0;
  let failure: Error | undefined;
  const fail = (e: Error): void => {
    failure ??= e;
  };
  await new Promise<void>((resolve, reject) => {
    const parser = new Parser({
      strict: true,
      // A gzip bomb would otherwise inflate without bound before our size limit is reached.
      maxDecompressionRatio: 1000,
      onReadEntry: (entry: ReadEntry) => {
        try {
          let path = entry.path.replace(/^\.\//, "");
          if (entry.type === "Directory") path = path.replace(/\/+$/, "");
          if (path === "" || path === ".") {
            entry.resume();
            return;
          }
          assertSafeRelativePath(path, where);
          if (entry.type !== "File" && entry.type !== "OldFile" && entry.type !== "Directory") {
            throw new PackageError(
              "unsupported-file-type",
              `${where}: refusing ${JSON.stringify(path)}: entry type ${entry.type}; expected only files and directories`,
            );
          }
          // A second entry with the same path would silently replace the first on extraction.
          if (seen.has(path)) {
            throw new PackageError(
              "bad-archive",
              `${where}: ${JSON.stringify(path)} appears twice`,
            );
          }
          seen.add(path);
          if (entry.type === "Directory") {
            dirs.push(path);
            entry.resume();
            return;
          }
          total += entry.size;
          if (files.length + 1 > limits.maxFiles) {
            throw new PackageError(
              "too-many-files",
              `${where}: more than ${limits.maxFiles} files; expected at most ${limits.maxFiles}`,
            );
          }
          if (total > limits.maxTotalBytes) {
            throw new PackageError(
              "too-large",
              `${where}: files total more than ${limits.maxTotalBytes} bytes; expected at most ${limits.maxTotalBytes}`,
            );
          }
          const chunks: Buffer[] = [];
          entry.on("data", (c: Buffer) => chunks.push(c));
          entry.on("end", () =>
            files.push({
              path,
              executable: ((entry.mode ?? 0) & 0o111) !== 0,
              content: Buffer.concat(chunks),
            }),
          );
        } catch (e) {
          fail(e as Error);
          entry.resume();
        }
      },
    });
    parser.on("error", (e: Error) =>
      reject(
        new PackageError("bad-archive", `${where}: not a valid .capsule archive: ${e.message}`),
      ),
    );
    parser.on("end", () => resolve());
    parser.end(data);
  });
  if (failure) throw failure;
  return { files, dirs };
}

/**
 * Extracts `file` into `destDir` (which must not exist or be empty). Nothing is written unless
 * every entry of the archive passes the checks.
 */
export async function unpackArchive(
  file: string,
  destDir: string,
  limits: PackageLimits = DEFAULT_LIMITS,
): Promise<void> {
  const handle = await open(file, "r");
  let data: Buffer;
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new PackageError("bad-archive", `${file}: not a regular file`);
    if (st.size > limits.maxTotalBytes) {
      throw new PackageError(
        "too-large",
        `${file}: archive is larger than ${limits.maxTotalBytes} bytes`,
      );
    }
    data = await handle.readFile();
  } finally {
    await handle.close();
  }
  const { files, dirs } = await readArchive(data, file, limits);
  await mkdir(destDir, { recursive: true });
  for (const d of dirs) await mkdir(join(destDir, d), { recursive: true });
  for (const f of files) {
    const target = join(destDir, f.path);
    await mkdir(dirname(target), { recursive: true });
    // "wx": never follow or overwrite something already at the target.
    await writeFile(target, f.content, { flag: "wx", mode: f.executable ? 0o755 : 0o644 });
  }
}
