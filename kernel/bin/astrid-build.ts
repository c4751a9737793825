/**
 * `astrid-build <capsule-dir> [--out DIR] [--archive] [--json]`: builds a capsule source folder
 * into an immutable package (see docs/astrid-build.md). Exit codes: 0 built, 1 build failed,
 * 2 usage error.
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import { ManifestError, ManifestNotFoundError } from "../../core/manifest/errors.js";
import { PackageError } from "../../core/package/errors.js";
import { buildCapsule } from "../build/build.js";
import { BuildError } from "../build/errors.js";

const USAGE = `usage: astrid-build <capsule-dir> [--out DIR] [--archive] [--json]

Builds the capsule in <capsule-dir> (a folder with Capsule.toml) into the package folder
DIR/<name>-<version>/ and prints its digest.

  --out DIR    where the package goes (default: <capsule-dir>/build)
  --archive    also write DIR/<name>-<version>.capsule (deterministic tar.gz)
  --json       print the result (or the error) as one JSON object on stdout
  -h, --help   show this help

exit codes: 0 built, 1 build failed, 2 usage error`;

interface Io {
  out(text: string): void;
  err(text: string): void;
}

/** Errors the build reports to the author; anything else is a bug and keeps its stack. */
const expected = (e: unknown): e is Error =>
  e instanceof ManifestError ||
  e instanceof ManifestNotFoundError ||
  e instanceof BuildError ||
  e instanceof PackageError;

async function main(argv: readonly string[], io: Io): Promise<number> {
  let values: { out?: string; archive?: boolean; json?: boolean; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        out: { type: "string" },
        archive: { type: "boolean" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    io.err(`astrid-build: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    io.out(`${USAGE}\n`);
    return 0;
  }
  const [srcDir, ...extra] = positionals;
  if (srcDir === undefined || extra.length > 0) {
    const why =
      srcDir === undefined
        ? "expected a capsule folder"
        : `expected one capsule folder, got ${positionals.length}`;
    io.err(`astrid-build: ${why}\n${USAGE}\n`);
    return 2;
  }
  try {
    const built = await buildCapsule(srcDir, {
      outDir: values.out ?? join(srcDir, "build"),
      archive: values.archive ?? false,
    });
    if (values.json) io.out(`${JSON.stringify({ ok: true, ...built })}\n`);
    else {
      io.out(`built ${built.name}@${built.version} ${built.digest} → ${built.dir}\n`);
      if (built.archive) io.out(`archive ${built.archive}\n`);
    }
    return 0;
  } catch (e) {
    if (!expected(e)) throw e;
    if (values.json) {
      const issues = e instanceof ManifestError ? { issues: e.issues } : {};
      const code = e instanceof BuildError || e instanceof PackageError ? { code: e.code } : {};
      io.out(
        `${JSON.stringify({ ok: false, error: { name: e.name, ...code, message: e.message, ...issues } })}\n`,
      );
    } else {
      io.err(`astrid-build: build failed\n${e.message}\n`);
    }
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2), {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
});
