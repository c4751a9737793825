/**
 * Keeps examples/capsule-<name>.yaml true to capsules/<name>/: the manifest text the CR
 * carries and the package digest astrid-build prints (the fetch init container refuses a
 * package whose digest or Capsule.toml differs from the CR). Comments are kept.
 * Run by `make docs`; operator/api/examples.test.ts checks the result.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseDocument, Scalar } from "yaml";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The digest astrid-build prints for capsules/<name>. */
export function builtDigest(name: string): string {
  const out = mkdtempSync(path.join(os.tmpdir(), "astrid-examples-"));
  try {
    const r = spawnSync(
      path.join(root, "bin", "astrid-build"),
      [path.join(root, "capsules", name), "--out", out, "--json"],
      { encoding: "utf8" },
    );
    const result = JSON.parse(r.stdout) as { ok: boolean; digest?: string; error?: string };
    if (!result.ok || !result.digest)
      throw new Error(`astrid-build ${name}: ${r.stdout}${r.stderr}`);
    return result.digest;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = path.join(root, "examples");
  for (const file of readdirSync(dir).filter((f) => /^capsule-.+\.yaml$/.test(f))) {
    const name = file.slice("capsule-".length, -".yaml".length);
    const p = path.join(dir, file);
    const doc = parseDocument(readFileSync(p, "utf8"));
    const manifest = new Scalar(
      readFileSync(path.join(root, "capsules", name, "Capsule.toml"), "utf8"),
    );
    manifest.type = Scalar.BLOCK_LITERAL;
    doc.setIn(["spec", "manifest"], manifest);
    doc.setIn(["spec", "package", "digest"], builtDigest(name));
    writeFileSync(p, doc.toString({ lineWidth: 0 }));
    console.log(`synced ${path.relative(root, p)}`);
  }
}
