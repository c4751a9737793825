/**
 * `buildCapsule`: a capsule source folder → a clean, immutable package folder
 * `<outDir>/<name>-<version>/` (Capsule.toml byte for byte + artefacts), its digest, and
 * optionally a deterministic `.capsule` archive beside it.
 *
 * The package is assembled in a staging folder and moved into place with one rename, so a
 * failed build never leaves a half-written package that looks complete. Building the same
 * source twice gives the same bytes and therefore the same digest.
 */

import { randomBytes } from "node:crypto";
import { chmod, mkdir, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { ManifestNotFoundError } from "../../core/manifest/errors.js";
import { MANIFEST_FILE, parseManifest } from "../../core/manifest/parse.js";
import type { Manifest } from "../../core/manifest/schema.js";
import { packagePathError } from "../../core/manifest/schema.js";
import { packArchive } from "../../core/package/archive.js";
import { digestPackage } from "../../core/package/digest.js";
import { DEFAULT_LIMITS, type PackageLimits } from "../../core/package/limits.js";
import { QUICKJS_MIN_MEMORY_MB } from "../../sidecar/engine/wasm/quickjs-engine.js";
import { bundleQuickJs } from "./bundle-quickjs.js";
import { checkCoreWasm } from "./check-core-wasm.js";
import { BuildError } from "./errors.js";
import { listSourceTree, readSourceFile, type SourceFile } from "./source-files.js";

/** Entry files of a JS/TS capsule, by convention (the schema has no build section). */
export const QUICKJS_ENTRIES: readonly string[] = ["src/index.ts", "src/index.js"];

/** Directories never copied from an mcp capsule's folder: dependencies and VCS metadata. */
export const MCP_SKIPPED_DIRS: ReadonlySet<string> = new Set([
  "node_modules",
  ".git",
  ".hg",
  ".svn",
]);

export type BuiltEngine = "quickjs" | "core" | "mcp" | "static";

export interface BuildOptions {
  /** Folder that receives `<name>-<version>/` (and `<name>-<version>.capsule`). */
  readonly outDir: string;
  /** Also write the deterministic `.capsule` archive. */
  readonly archive?: boolean;
  readonly limits?: PackageLimits;
}

export interface BuiltCapsule {
  readonly name: string;
  readonly version: string;
  /** `sha256:<hex>`, as core/package digestPackage computes it. */
  readonly digest: string;
  /** The package folder. */
  readonly dir: string;
  /** The `.capsule` file, when asked for. */
  readonly archive?: string;
  readonly engine: BuiltEngine;
  /** Package files, in canonical order. */
  readonly files: readonly string[];
}

interface Artefact {
  readonly content: Buffer;
  readonly executable: boolean;
}

const inside = (root: string, abs: string): boolean =>
  abs === root || abs.startsWith(root.endsWith(sep) ? root : root + sep);

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function realFolder(dir: string): Promise<string> {
  try {
    const real = await realpath(dir);
    if ((await stat(real)).isDirectory()) return real;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  throw new BuildError(
    "missing-file",
    `${dir}: no such directory; expected a capsule source folder`,
  );
}

/** Reads every file, reporting all missing ones at once (an author fixes them in one go). */
async function readAll(
  root: string,
  wanted: readonly { path: string; what: string }[],
): Promise<SourceFile[]> {
  const results = await Promise.allSettled(wanted.map((w) => readSourceFile(root, w.path, w.what)));
  const failures = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
  const first = failures[0];
  if (first !== undefined) {
    if (failures.every((f) => f instanceof BuildError && f.code === "missing-file")) {
      throw new BuildError("missing-file", failures.map((f) => (f as Error).message).join("\n"));
    }
    throw failures.find((f) => !(f instanceof BuildError && f.code === "missing-file")) ?? first;
  }
  return results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
}

async function buildQuickJs(
  root: string,
  m: Manifest,
  module: string,
  memoryMb: number,
): Promise<Artefact> {
  // The engine refuses less; failing here tells the author before anything is deployed.
  if (memoryMb < QUICKJS_MIN_MEMORY_MB) {
    throw new BuildError(
      "bad-module",
      `${root}: wasm.memory_mb is ${memoryMb}; expected at least ${QUICKJS_MIN_MEMORY_MB} for a QuickJS capsule (the interpreter itself needs 16 MiB)`,
    );
  }
  const present: string[] = [];
  for (const e of QUICKJS_ENTRIES) if (await exists(join(root, e))) present.push(e);
  if (present.length > 1) {
    throw new BuildError(
      "bundle-failed",
      `${root}: found both ${present.join(" and ")}; expected exactly one entry`,
    );
  }
  // Without a source entry, a prebuilt module in the folder is re-bundled: the same checks
  // (no Node built-ins, nothing left to import) apply to it.
  const entry = present[0] ?? module;
  await readSourceFile(
    root,
    entry,
    present[0] ? "the entry" : `the module (no ${QUICKJS_ENTRIES.join(" or ")} found)`,
  );
  const bundle = await bundleQuickJs(root, entry, module);
  const exported = new Set(bundle.exports);
  const missing = m.handlers
    .map((h, i) => ({ fn: h.function, i }))
    .filter((h, at, all) => !exported.has(h.fn) && all.findIndex((x) => x.fn === h.fn) === at);
  if (missing.length > 0) {
    throw new BuildError(
      "missing-export",
      `${root}: the bundle of ${entry} does not export ${missing.map((h) => `${JSON.stringify(h.fn)} (handler[${h.i}].function)`).join(", ")}; it exports ${bundle.exports.length > 0 ? bundle.exports.map((e) => JSON.stringify(e)).join(", ") : "nothing"}; expected every [[handler]] function to be an export`,
    );
  }
  return { content: bundle.code, executable: false };
}

/** What goes into the package besides Capsule.toml, by engine. */
async function collectArtefacts(
  root: string,
  m: Manifest,
  outDir: string,
): Promise<{ engine: BuiltEngine; files: Map<string, Artefact> }> {
  const files = new Map<string, Artefact>();
  const e = m.engine;
  let engine: BuiltEngine;
  if (e.type === "wasm" && e.kind === "quickjs") {
    engine = "quickjs";
    files.set(e.module, await buildQuickJs(root, m, e.module, e.memory_mb));
  } else if (e.type === "wasm") {
    engine = "core";
    const [src] = await readAll(root, [{ path: e.module, what: "the module" }]);
    if (!src) throw new Error("unreachable: readAll returned nothing");
    await checkCoreWasm(src.content, {
      name: `${root}/${e.module}`,
      memoryMb: e.memory_mb,
      handlers: m.handlers.map((h) => h.function),
    });
    files.set(e.module, { content: src.content, executable: false });
  } else if (e.type === "mcp") {
    engine = "mcp";
    // An MCP server is a program in any language: its folder is the artefact. An output folder
    // inside the source is skipped so a rebuild never packs the previous build.
    const paths = await listSourceTree(
      root,
      MCP_SKIPPED_DIRS,
      inside(root, outDir) ? [outDir] : [],
    );
    const read = await readAll(
      root,
      paths.map((p) => ({ path: p, what: "file" })),
    );
    for (const f of read) files.set(f.path, { content: f.content, executable: f.executable });
  } else {
    engine = "static";
    const wanted = [
      ...e.prompts.flatMap((p) =>
        p.file === undefined
          ? []
          : [{ path: p.file, what: `prompt ${JSON.stringify(p.name)} file` }],
      ),
      ...e.context_files.map((c) => ({ path: c.path, what: "context file" })),
    ];
    for (const f of await readAll(root, wanted))
      files.set(f.path, { content: f.content, executable: false });
  }
  // A [[topic]] schema given as a path travels with the package when the file is there; the
  // schema also accepts other strings, so an absent file is not an error.
  for (const t of m.topics) {
    if (typeof t.schema !== "string" || packagePathError(t.schema) || files.has(t.schema)) continue;
    if (!(await exists(join(root, t.schema)))) continue;
    const [f] = await readAll(root, [
      { path: t.schema, what: `topic ${JSON.stringify(t.name)} schema` },
    ]);
    if (f) files.set(f.path, { content: f.content, executable: false });
  }
  return { engine, files };
}

async function writePackage(dir: string, files: ReadonlyMap<string, Artefact>): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [path, a] of files) {
    const target = join(dir, ...path.split("/"));
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, a.content, { flag: "wx" });
    await chmod(target, a.executable ? 0o755 : 0o644);
  }
}

export async function buildCapsule(srcDir: string, opts: BuildOptions): Promise<BuiltCapsule> {
  const limits = opts.limits ?? DEFAULT_LIMITS;
  const root = await realFolder(srcDir);
  const manifestPath = join(srcDir, MANIFEST_FILE);
  let manifestFile: SourceFile;
  try {
    manifestFile = await readSourceFile(root, MANIFEST_FILE, "the manifest");
  } catch (e) {
    if (e instanceof BuildError && e.code === "missing-file") {
      throw new ManifestNotFoundError(
        `${manifestPath}: no such file; expected a ${MANIFEST_FILE} here`,
      );
    }
    throw e;
  }
  // Parsed from the very bytes that are copied, so what was validated is what ships.
  const manifest = parseManifest(manifestFile.content.toString("utf8"), manifestPath);
  const { name, version } = manifest.package;

  await mkdir(resolve(opts.outDir), { recursive: true });
  const outDir = await realpath(resolve(opts.outDir));
  const pkgDir = join(outDir, `${name}-${version}`);
  if (outDir === root || inside(pkgDir, root)) {
    throw new BuildError(
      "bad-output",
      `${root}: the output ${pkgDir} would replace or hold the capsule folder itself; expected an output folder elsewhere`,
    );
  }

  const { engine, files } = await collectArtefacts(root, manifest, outDir);
  files.set(MANIFEST_FILE, { content: manifestFile.content, executable: false });

  const staging = join(outDir, `.${name}-${version}.${randomBytes(6).toString("hex")}.staging`);
  try {
    await writePackage(staging, files);
    const { digest, files: listed } = await digestPackage(staging, limits);
    await rm(pkgDir, { recursive: true, force: true });
    await rename(staging, pkgDir);
    let archive: string | undefined;
    if (opts.archive) {
      archive = join(outDir, `${name}-${version}.capsule`);
      const tmp = `${staging}.capsule`;
      try {
        await packArchive(pkgDir, tmp, limits);
        await rename(tmp, archive);
      } finally {
        await rm(tmp, { force: true });
      }
    }
    return {
      name,
      version,
      digest,
      dir: pkgDir,
      ...(archive ? { archive } : {}),
      engine,
      files: listed.map((f) => f.path),
    };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
