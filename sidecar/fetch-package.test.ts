/**
 * `astrid-sidecar fetch-package` against a local HTTP server serving a real archive made by
 * core/package: the good case extracts exactly the package; a wrong digest, a 404, a manifest
 * that differs, an oversized archive and a non-empty destination each exit 1 with one line
 * and leave the destination as it was.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { digestPackage, packArchive } from "../core/package/index.js";
import { fetchPackageHelp, runFetchPackage } from "./fetch-package.js";

const run = promisify(execFile);
const MAIN = path.resolve("sidecar/main.ts");

const MANIFEST = `[package]
name = "fetched"
version = "0.1.0"
description = "A package served over HTTP"

[capabilities]
ipc_subscribe = ["tool.v1.execute.fetched"]

[wasm]
module = "main.js"

[[handler]]
topic = "tool.v1.execute.fetched"
function = "run"
`;

let root: string;
let server: http.Server;
let base: string;
let archive: Buffer;
let digest: string;
let big: Buffer;

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-fetch-"));
  const pkg = path.join(root, "pkg");
  mkdirSync(path.join(pkg, "lib"), { recursive: true });
  writeFileSync(path.join(pkg, "Capsule.toml"), MANIFEST);
  writeFileSync(path.join(pkg, "main.js"), "export function run() { return {}; }\n");
  writeFileSync(path.join(pkg, "lib", "util.js"), "export const x = 1;\n");
  await packArchive(pkg, path.join(root, "fetched.capsule"));
  archive = readFileSync(path.join(root, "fetched.capsule"));
  // The package digest astrid-build prints, not the archive bytes' sha256.
  digest = (await digestPackage(pkg)).digest;
  expect(digest).not.toBe(`sha256:${createHash("sha256").update(archive).digest("hex")}`);
  writeFileSync(path.join(root, "Capsule.toml"), MANIFEST);
  writeFileSync(
    path.join(root, "Other.toml"),
    MANIFEST.replace('"tool.v1.execute.fetched"', '">"'),
  );
  big = Buffer.alloc(200_000, 7);
  server = http.createServer((req, res) => {
    if (req.url === "/fetched.capsule") {
      res.writeHead(200, { "content-length": archive.length });
      res.end(archive);
    } else if (req.url === "/big.capsule") {
      res.writeHead(200, { "content-length": big.length });
      res.end(big);
    } else if (req.url === "/big-chunked.capsule") {
      // No Content-Length: the cap must hold while reading.
      res.writeHead(200);
      res.write(big.subarray(0, 100_000));
      res.end(big.subarray(100_000));
    } else {
      res.writeHead(404);
      res.end("not here");
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => server?.close(r));
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
/** A fresh destination path (absent) under the test root. */
const freshDest = (): string => path.join(root, `dest-${++n}`, "package");

async function fetchWith(
  env: Record<string, string>,
  argv: string[] = [],
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await runFetchPackage(argv, env, {
    stdout: (s) => {
      stdout += s;
    },
    stderr: (s) => {
      stderr += s;
    },
  });
  return { code, stdout, stderr };
}

const envFor = (dest: string, over: Record<string, string> = {}): Record<string, string> => ({
  ASTRID_FETCH_URL: `${base}/fetched.capsule`,
  ASTRID_FETCH_DIGEST: digest,
  ASTRID_FETCH_DEST: dest,
  ASTRID_FETCH_MANIFEST: path.join(root, "Capsule.toml"),
  ...over,
});

/** Everything under `dir`, relative, sorted (staging directories would show up here). */
function tree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true }) as string[]).sort();
}

describe("fetch-package", () => {
  it("extracts the package into an absent destination with one rename", async () => {
    const dest = freshDest();
    const r = await fetchWith(envFor(dest));
    expect(r).toEqual({
      code: 0,
      stdout: `astrid-sidecar fetch-package: ${base}/fetched.capsule (${digest}, ${archive.length} bytes) extracted into ${dest}\n`,
      stderr: "",
    });
    expect(tree(dest)).toEqual(["Capsule.toml", "lib", "lib/util.js", "main.js"]);
    expect(readFileSync(path.join(dest, "Capsule.toml"), "utf8")).toBe(MANIFEST);
    // Nothing staged is left beside it.
    expect(readdirSync(path.dirname(dest))).toEqual(["package"]);
  });

  it("fills an existing empty directory (an emptyDir mount point) through flags", async () => {
    const dest = freshDest();
    mkdirSync(dest, { recursive: true });
    const r = await fetchWith({}, [
      "--url",
      `${base}/fetched.capsule`,
      `--digest=${digest}`,
      "--dest",
      dest,
      "--manifest",
      path.join(root, "Capsule.toml"),
    ]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(tree(dest)).toEqual(["Capsule.toml", "lib", "lib/util.js", "main.js"]);
  });

  it("refuses an archive whose digest differs, naming both digests, and extracts nothing", async () => {
    const dest = freshDest();
    mkdirSync(dest, { recursive: true });
    const wrong = `sha256:${"0".repeat(64)}`;
    const r = await fetchWith(envFor(dest, { ASTRID_FETCH_DIGEST: wrong }));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `astrid-sidecar fetch-package: digest mismatch: ${base}/fetched.capsule has ${digest}, expected ${wrong}; nothing extracted\n`,
    );
    expect(tree(dest)).toEqual([]);
  });

  it("says which status a failed download had", async () => {
    const dest = freshDest();
    const r = await fetchWith(envFor(dest, { ASTRID_FETCH_URL: `${base}/missing.capsule` }));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `astrid-sidecar fetch-package: download ${base}/missing.capsule: HTTP 404 Not Found; expected 200\n`,
    );
    expect(existsSync(dest)).toBe(false);
  });

  it("refuses a package whose Capsule.toml differs from the Capsule resource's manifest", async () => {
    const dest = freshDest();
    mkdirSync(dest, { recursive: true });
    const other = path.join(root, "Other.toml");
    const r = await fetchWith(envFor(dest, { ASTRID_FETCH_MANIFEST: other }));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `astrid-sidecar fetch-package: ${base}/fetched.capsule: the package's Capsule.toml differs from the Capsule resource's manifest (${other}); nothing extracted\n`,
    );
    expect(tree(dest)).toEqual([]);
    const absent = freshDest();
    expect((await fetchWith(envFor(absent, { ASTRID_FETCH_MANIFEST: other }))).code).toBe(1);
    expect(tree(path.dirname(absent))).toEqual([]);
  });

  it("stops reading an archive over the size cap, declared or not", async () => {
    for (const file of ["big.capsule", "big-chunked.capsule"]) {
      const dest = freshDest();
      const r = await fetchWith(
        envFor(dest, { ASTRID_FETCH_URL: `${base}/${file}`, ASTRID_FETCH_MAX_BYTES: "100000" }),
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(
        `astrid-sidecar fetch-package: download ${base}/${file}: the archive is larger than 100000 bytes; expected at most 100000\n`,
      );
      expect(existsSync(dest)).toBe(false);
    }
  });

  it("refuses bytes that are not a .capsule archive", async () => {
    const dest = freshDest();
    const r = await fetchWith(
      envFor(dest, {
        ASTRID_FETCH_URL: `${base}/big.capsule`,
        ASTRID_FETCH_DIGEST: `sha256:${createHash("sha256").update(big).digest("hex")}`,
      }),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^astrid-sidecar fetch-package: ${base}/big.capsule: not a valid .capsule archive: .*; nothing extracted\\n$`,
      ),
    );
    expect(tree(path.dirname(dest))).toEqual([]);
  });

  it("refuses a destination that is not empty, touching nothing in it", async () => {
    const dest = freshDest();
    mkdirSync(dest, { recursive: true });
    writeFileSync(path.join(dest, "old.js"), "stale");
    const r = await fetchWith(envFor(dest));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `astrid-sidecar fetch-package: destination ${dest} is not empty (holds old.js); expected an empty or absent directory\n`,
    );
    expect(tree(dest)).toEqual(["old.js"]);
  });

  it("reports every configuration problem at once and exits 2", async () => {
    const r = await fetchWith(
      { ASTRID_FETCH_URL: "ftp://x/y", ASTRID_FETCH_DIGEST: "sha256:abc" },
      ["--timeout-ms", "soon", "--colour", "red"],
    );
    expect(r.code).toBe(2);
    expect(r.stderr.split("\n")).toEqual([
      'astrid-sidecar fetch-package: flag --timeout-ms: timeoutMs: expected an integer, got "soon"',
      "astrid-sidecar fetch-package: flag --colour: unknown flag; see astrid-sidecar fetch-package --help",
      "astrid-sidecar fetch-package: env ASTRID_FETCH_URL: url: expected an http:// or https:// URL of a .capsule archive",
      "astrid-sidecar fetch-package: env ASTRID_FETCH_DIGEST: digest: expected sha256:<64 lowercase hex digits>",
      "astrid-sidecar fetch-package: dest: required (set ASTRID_FETCH_DEST or --dest)",
      "astrid-sidecar fetch-package: manifest: required (set ASTRID_FETCH_MANIFEST or --manifest)",
      "",
    ]);
  });

  it("runs as `astrid-sidecar fetch-package` in the binary, with its own --help", async () => {
    const dest = freshDest();
    const ok = await run(process.execPath, ["--import", "tsx", MAIN, "fetch-package"], {
      env: { ...process.env, ...envFor(dest) },
    });
    expect(ok.stdout).toContain(`extracted into ${dest}`);
    expect(tree(dest)).toEqual(["Capsule.toml", "lib", "lib/util.js", "main.js"]);
    const bad = await run(process.execPath, ["--import", "tsx", MAIN, "fetch-package"], {
      env: {
        ...process.env,
        ...envFor(freshDest(), { ASTRID_FETCH_DIGEST: `sha256:${"1".repeat(64)}` }),
      },
    }).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^astrid-sidecar fetch-package: digest mismatch: /);
    const help = await run(process.execPath, ["--import", "tsx", MAIN, "fetch-package", "--help"]);
    expect(help.stdout).toBe(fetchPackageHelp());
    expect(help.stdout).toContain("  --digest VALUE\n");
    expect(help.stdout).toContain("Env ASTRID_FETCH_MAX_BYTES. Default 67108864.");
  });
});
