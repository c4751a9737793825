// Bundles the command-line programs into dist/ (one ESM file each plus shared chunks), so they
// start without compiling TypeScript: `bin/astrid` uses dist/ when it is there. Dependencies stay
// in node_modules (they are loaded, not bundled). Runs in a fraction of a second.
import { build } from "esbuild";

await build({
  entryPoints: {
    astrid: "kernel/bin/astrid.ts",
    "astrid-daemon": "kernel/bin/astrid-daemon.ts",
    "astrid-build": "kernel/bin/astrid-build.ts",
    "astrid-sidecar": "sidecar/main.ts",
    "astrid-operator": "operator/main.ts",
  },
  outdir: "dist",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  packages: "external",
  sourcemap: "linked",
  logLevel: "warning",
});
