// Bundles the command-line programs into dist/ (one ESM file each plus shared chunks), so they
// start without compiling TypeScript: `bin/astrid` uses dist/ when it is there. Dependencies stay
// in node_modules (they are loaded, not bundled) — except in `astrid` itself, see below. Runs in
// a fraction of a second.
//
// Beside each program, `dist/<name>.inputs` lists the source files it was built from; the
// wrappers in bin/ run the bundle only while none of them is newer (a test file or another
// program's source being edited does not make it stale).
import { readFileSync, writeFileSync } from "node:fs";
import { build } from "esbuild";

const common = {
  outdir: "dist",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  sourcemap: "linked",
  logLevel: "warning",
  metafile: true,
};

const pkg = JSON.parse(readFileSync("package.json", "utf8"));
const dependencies = Object.keys({ ...pkg.dependencies, ...pkg.devDependencies });

const [programs, cli, daemonBuild] = await Promise.all([
  build({
    ...common,
    entryPoints: {
      "astrid-build": "kernel/bin/astrid-build.ts",
      "astrid-sidecar": "sidecar/main.ts",
      "astrid-operator": "operator/main.ts",
      // `astrid init|capsule|audit`: imported by dist/astrid.js when such a command runs.
      "astrid-local": "kernel/cli/local-commands.ts",
    },
    packages: "external",
  }),
  // `astrid -p` is started for every prompt, so its start is on the path issue 5 measures: its
  // own build bundles zod (the protocol's zod/mini schemas tree-shake to a few KB; loading the
  // package's hundred modules cost ~70 ms). What it loads only on demand (init, capsule, audit)
  // comes from the other build's dist/astrid-local.js (with zod from node_modules), so none of
  // it shares a chunk with — and is loaded by — the prompt path. Own chunk names: the two builds
  // share dist/.
  build({
    ...common,
    entryPoints: { astrid: "kernel/bin/astrid.ts" },
    external: dependencies.filter((d) => d !== "zod"),
    chunkNames: "cli-[name]-[hash]",
    plugins: [
      {
        name: "local-commands-from-their-own-bundle",
        setup(b) {
          b.onResolve({ filter: /\/cli\/local-commands\.js$/ }, () => ({
            path: "./astrid-local.js",
            external: true,
          }));
        },
      },
    ],
  }),
  // A cold `astrid -p` waits for the daemon to load (issue 5: under 1 s). Resolving and reading
  // ~1,000 module files of zod, the MCP SDK, ajv and semver one by one cost more than the same
  // code in one file, so the daemon bundles its dependencies too — except those that load
  // files of their own at run time (QuickJS's .wasm, esbuild's binary). CommonJS dependencies
  // call `require`, which an ES module lacks: the banner provides it.
  build({
    ...common,
    entryPoints: { "astrid-daemon": "kernel/bin/astrid-daemon.ts" },
    external: ["esbuild", "@jitl/*", "quickjs-emscripten", "quickjs-emscripten-core"],
    chunkNames: "daemon-[name]-[hash]",
    banner: {
      js: 'import { createRequire as __astridCreateRequire } from "node:module";\nconst require = __astridCreateRequire(import.meta.url);',
    },
  }),
]);

/** Source files (not node_modules) that went into `entry`'s output, through every chunk. */
function inputsOf(metafile, entry) {
  const outputs = metafile.outputs;
  const seen = new Set();
  const files = new Set();
  const visit = (out) => {
    if (seen.has(out)) return;
    seen.add(out);
    for (const f of Object.keys(outputs[out].inputs)) {
      if (!f.startsWith("node_modules/")) files.add(f);
    }
    for (const i of outputs[out].imports) if (outputs[i.path]) visit(i.path);
  };
  visit(`dist/${entry}.js`);
  return files;
}

const write = (name, ...sets) => {
  const all = [...new Set(sets.flatMap((s) => [...s]))].sort();
  writeFileSync(`dist/${name}.inputs`, `${all.join("\n")}\n`);
};
const daemon = inputsOf(daemonBuild.metafile, "astrid-daemon");
// The CLI starts dist/astrid-daemon.js when it runs bundled: a stale daemon counts too.
write(
  "astrid",
  inputsOf(cli.metafile, "astrid"),
  inputsOf(programs.metafile, "astrid-local"),
  daemon,
);
write("astrid-daemon", daemon);
write("astrid-build", inputsOf(programs.metafile, "astrid-build"));
write("astrid-sidecar", inputsOf(programs.metafile, "astrid-sidecar"));
write("astrid-operator", inputsOf(programs.metafile, "astrid-operator"));
