/**
 * Reading from a capsule's source folder. The build copies bytes from the source into a
 * package that is then trusted by digest, so a source entry that is a symbolic link (or sits
 * under a linked directory) could pull any file of the builder's machine — a key, a token —
 * into a package and ship it. Only regular files that really live inside the folder are read.
 */

import type { Dirent } from "node:fs";
import { lstat, readdir, readFile, realpath } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { BuildError } from "./errors.js";

export interface SourceFile {
  /** POSIX path relative to the source root. */
  readonly path: string;
  readonly content: Buffer;
  readonly executable: boolean;
}

const inside = (root: string, abs: string): boolean =>
  abs === root || abs.startsWith(root.endsWith(sep) ? root : root + sep);

/**
 * Reads `<root>/<rel>`; `root` must already be a realpath. `what` names the file in errors
 * ("prompt \"greet\" file", "the module") so the author sees which manifest entry is wrong.
 */
export async function readSourceFile(root: string, rel: string, what: string): Promise<SourceFile> {
  const abs = join(root, ...rel.split("/"));
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(abs);
  } catch (e) {
    if (
      (e as NodeJS.ErrnoException).code === "ENOENT" ||
      (e as NodeJS.ErrnoException).code === "ENOTDIR"
    ) {
      throw new BuildError(
        "missing-file",
        `${root}: ${what} ${JSON.stringify(rel)} does not exist; expected a file in the capsule folder`,
      );
    }
    throw e;
  }
  if (st.isSymbolicLink()) {
    throw new BuildError(
      "unsafe-source",
      `${root}: ${what} ${JSON.stringify(rel)} is a symbolic link; expected a regular file (a link could pull a file from outside the capsule into the package)`,
    );
  }
  if (!st.isFile()) {
    throw new BuildError(
      "unsafe-source",
      `${root}: ${what} ${JSON.stringify(rel)} is not a regular file; expected a regular file`,
    );
  }
  const realDir = await realpath(dirname(abs));
  if (!inside(root, realDir)) {
    throw new BuildError(
      "unsafe-source",
      `${root}: ${what} ${JSON.stringify(rel)} resolves outside the capsule folder (through a linked directory); expected a file inside it`,
    );
  }
  return { path: rel, content: await readFile(abs), executable: (st.mode & 0o111) !== 0 };
}

const describeType = (d: Dirent): string =>
  d.isSymbolicLink()
    ? "a symbolic link"
    : d.isFIFO()
      ? "a FIFO"
      : d.isSocket()
        ? "a socket"
        : "a device";

/**
 * Every regular file under `root` (a realpath), in bytewise path order, skipping directories
 * named in `skipNames` anywhere and the absolute directories in `skipDirs`. Links and special
 * files are refused, not skipped: silently leaving out a file the server needs would make a
 * package that fails only at run time.
 */
export async function listSourceTree(
  root: string,
  skipNames: ReadonlySet<string>,
  skipDirs: readonly string[],
): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const abs = join(dir, e.name);
      const rel = relative(root, abs).split(sep).join("/");
      if (e.isDirectory()) {
        if (skipNames.has(e.name) || skipDirs.includes(abs)) continue;
        await walk(abs);
      } else if (e.isFile()) {
        out.push(rel);
      } else {
        throw new BuildError(
          "unsafe-source",
          `${root}: ${JSON.stringify(rel)} is ${describeType(e)}; expected only regular files and directories in an mcp capsule folder`,
        );
      }
    }
  };
  await walk(root);
  return out.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}
