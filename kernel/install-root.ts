/**
 * Where this Astrid installation lives (the folder with its package.json, capsules/ and bin/),
 * found by walking up from the running module: the same answer whether the CLI runs from its
 * TypeScript sources (kernel/bin/*.ts) or from the bundle in dist/.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export function installRoot(from: string = import.meta.url): string {
  let dir = path.dirname(fileURLToPath(from));
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (
      existsSync(pkg) &&
      (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "astrid"
    ) {
      return dir;
    }
    const up = path.dirname(dir);
    if (up === dir)
      throw new Error(`cannot find Astrid's package.json above ${fileURLToPath(from)}`);
    dir = up;
  }
}

/** True when running from the bundle (dist/), where no TypeScript loader is needed. */
export function runningBundled(from: string = import.meta.url): boolean {
  return from.endsWith(".js") && fileURLToPath(from).includes(`${path.sep}dist${path.sep}`);
}
