/**
 * Bundles a JS/TS capsule into the one ESM file the QuickJS engine loads. QuickJS has no
 * module loader, so the bundle must be self-contained: every import is resolved now or the
 * build fails naming it. Node built-ins are refused outright: a capsule has no ambient
 * authority (layer 1), and a bundle that needs `fs` would either fail at load or tempt
 * someone into shimming Node into the sandbox. The `astrid` global is the only door.
 */

import { stat } from "node:fs/promises";
import { builtinModules } from "node:module";
import { join } from "node:path";
import { build, type Message, type Plugin } from "esbuild";
import { BuildError } from "./errors.js";

export interface QuickJsBundle {
  readonly code: Buffer;
  /** Names the bundle exports: the handlers the engine can call. */
  readonly exports: readonly string[];
}

const BUILTINS: ReadonlySet<string> = new Set(builtinModules);

/** `fs`, `fs/promises`, `node:anything`. */
export function isNodeBuiltin(specifier: string): boolean {
  if (specifier.startsWith("node:")) return true;
  return BUILTINS.has(specifier) || BUILTINS.has(specifier.split("/")[0] ?? "");
}

const refuseNodeBuiltins: Plugin = {
  name: "astrid-refuse-node-builtins",
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) =>
      isNodeBuiltin(args.path)
        ? {
            errors: [
              {
                text: `imports the Node built-in ${JSON.stringify(args.path)}; a capsule has no ambient authority, expected the astrid host API (astrid.fs, astrid.net, …) instead`,
              },
            ],
          }
        : undefined,
    );
  },
};

function formatMessage(m: Message): string {
  const where = m.location
    ? `${m.location.file}:${m.location.line}:${m.location.column + 1}: `
    : "";
  const unresolved = /^Could not resolve "(.*)"$/.exec(m.text);
  const text = unresolved
    ? `cannot bundle the import ${JSON.stringify(unresolved[1])}: not found; expected a relative module or a package installed in node_modules (a QuickJS capsule cannot load anything at run time)`
    : m.text;
  return `${where}${text}`;
}

/** `entry` and `outPath` are relative to `root` (a realpath); `outPath` only names the output. */
export async function bundleQuickJs(
  root: string,
  entry: string,
  outPath: string,
): Promise<QuickJsBundle> {
  // esbuild would otherwise take the nearest tsconfig.json above the entry, even one outside
  // the capsule folder, so the same source could bundle differently depending on where it sits.
  const ownTsconfig = join(root, "tsconfig.json");
  const tsconfig = (await stat(ownTsconfig)
    .then((s) => s.isFile())
    .catch(() => false))
    ? { tsconfig: ownTsconfig }
    : { tsconfigRaw: {} };
  let result: Awaited<ReturnType<typeof build>>;
  try {
    result = await build({
      absWorkingDir: root,
      entryPoints: [entry],
      outfile: outPath,
      bundle: true,
      format: "esm",
      platform: "neutral",
      // neutral has no default main fields; packages that only name "main" must still resolve.
      mainFields: ["module", "main"],
      target: "es2020",
      minify: false,
      sourcemap: false,
      write: false,
      metafile: true,
      logLevel: "silent",
      plugins: [refuseNodeBuiltins],
      ...tsconfig,
    });
  } catch (e) {
    const errors = (e as { errors?: Message[] }).errors;
    if (!Array.isArray(errors) || errors.length === 0) throw e;
    const ambient = errors.some((m) => m.pluginName === refuseNodeBuiltins.name);
    throw new BuildError(
      ambient ? "ambient-authority" : "bundle-failed",
      `${root}: cannot bundle ${entry}:\n${errors.map((m) => `  ${formatMessage(m)}`).join("\n")}`,
    );
  }
  const file = result.outputFiles?.[0];
  const meta = Object.values(result.metafile?.outputs ?? {})[0];
  if (!file || !meta || result.outputFiles?.length !== 1) {
    throw new BuildError(
      "bundle-failed",
      `${root}: esbuild produced no single output for ${entry}`,
    );
  }
  // Anything left as an import (e.g. a computed dynamic import) would fail inside QuickJS.
  const left = meta.imports.filter((i) => i.external);
  if (left.length > 0) {
    throw new BuildError(
      "bundle-failed",
      `${root}: the bundle of ${entry} still imports ${left.map((i) => JSON.stringify(i.path)).join(", ")} at run time; expected every import to be bundled`,
    );
  }
  return { code: Buffer.from(file.contents), exports: meta.exports };
}
