import { execFile } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { digestPackage } from "../../core/package/digest.js";

const CLI = new URL("./astrid-build.ts", import.meta.url).pathname;
const FIXTURES = new URL("../../test/fixtures/build/", import.meta.url).pathname;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI as a user would: a separate node process. */
function run(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", CLI, ...args], (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let work: string;
let src: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "astrid-build-cli-"));
  src = join(work, "greeter");
  await cp(join(FIXTURES, "quickjs-ts"), src, { recursive: true });
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("astrid-build CLI", () => {
  it("--help prints the usage and exits 0", async () => {
    const r = await run("--help");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /^usage: astrid-build <capsule-dir> \[--out DIR\] \[--archive\] \[--json\]\n/,
    );
    expect(r.stdout).toContain("exit codes: 0 built, 1 build failed, 2 usage error");
    expect(r.stderr).toBe("");
  });

  it("exits 2 without a capsule folder, with an unknown flag, or with two folders", async () => {
    const none = await run();
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^astrid-build: expected a capsule folder\nusage: /);
    const unknown = await run(src, "--fast");
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^astrid-build: Unknown option '--fast'/);
    const two = await run(src, src);
    expect(two.code).toBe(2);
    expect(two.stderr).toMatch(/^astrid-build: expected one capsule folder, got 2\n/);
  });

  it("builds into <capsule-dir>/build by default and prints name, version, digest and path", async () => {
    const r = await run(src);
    expect(r.code).toBe(0);
    const dir = join(src, "build", "greeter-0.1.0");
    const { digest } = await digestPackage(dir);
    expect(r.stdout).toBe(`built greeter@0.1.0 ${digest} → ${dir}\n`);
    expect(r.stderr).toBe("");
  });

  it("--out --archive --json prints the result as one JSON object", async () => {
    const out = join(work, "out");
    const r = await run(src, "--out", out, "--archive", "--json");
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout) as Record<string, unknown>;
    const dir = join(out, "greeter-0.1.0");
    expect(result).toEqual({
      ok: true,
      name: "greeter",
      version: "0.1.0",
      digest: (await digestPackage(dir)).digest,
      dir,
      archive: join(out, "greeter-0.1.0.capsule"),
      engine: "quickjs",
      files: ["Capsule.toml", "dist/main.js"],
    });
    expect((await readFile(join(out, "greeter-0.1.0.capsule")))[0]).toBe(0x1f); // gzip
  });

  it("exits 1 and names the problem when the build fails", async () => {
    const bad = join(work, "sneaky");
    await cp(join(FIXTURES, "quickjs-node-fs"), bad, { recursive: true });
    const r = await run(bad, "--out", join(work, "out-bad"));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(
      `astrid-build: build failed\n${bad}: cannot bundle src/index.ts:\n` +
        '  src/index.ts:1:30: imports the Node built-in "node:fs"; a capsule has no ambient authority, expected the astrid host API (astrid.fs, astrid.net, …) instead\n',
    );
  });

  it("exits 1 with the parser's located issues as JSON for a broken manifest", async () => {
    const broken = join(work, "broken");
    await cp(join(FIXTURES, "static"), broken, { recursive: true });
    const toml = join(broken, "Capsule.toml");
    await writeFile(toml, (await readFile(toml, "utf8")).replace("[static]", "[statik]"));
    const r = await run(broken, "--json", "--out", join(work, "out-broken"));
    expect(r.code).toBe(1);
    const result = JSON.parse(r.stdout) as {
      ok: boolean;
      error: { name: string; issues: unknown };
    };
    expect(result.ok).toBe(false);
    expect(result.error.name).toBe("ManifestError");
    expect(result.error.issues).toEqual([
      {
        file: toml,
        line: 1,
        column: 1,
        field: "",
        message: "no engine; expected exactly one of [wasm], [mcp] or [static], found none",
      },
      {
        file: toml,
        line: 7,
        column: 1,
        field: "statik",
        message: 'unknown key "statik"; did you mean "static"?',
      },
    ]);
  });
});
