import { execFileSync } from "node:child_process";
import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { Header } from "tar";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { packArchive, unpackArchive } from "./archive.js";
import { canonicalList, digestPackage } from "./digest.js";
import { PackageError } from "./errors.js";
import { installPackage, uninstallPackage, verifyInstalled } from "./install.js";

const MANIFEST = `[package]
name = "demo"
version = "1.0.0"
description = "a demo capsule"

[wasm]
module = "dist/main.js"
`;

let work: string;

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), "astrid-pkg-"));
});

afterEach(async () => {
  // Installed trees are read-only; make everything writable before removing.
  execFileSync("chmod", ["-R", "u+w", work]);
  await rm(work, { recursive: true, force: true });
});

async function makePackage(dir: string, manifest = MANIFEST): Promise<string> {
  await mkdir(join(dir, "dist"), { recursive: true });
  await writeFile(join(dir, "Capsule.toml"), manifest);
  await writeFile(join(dir, "dist", "main.js"), "export function handle() { return 1; }\n");
  await writeFile(join(dir, "README.md"), "# demo\n");
  await chmod(join(dir, "Capsule.toml"), 0o644);
  await chmod(join(dir, "dist", "main.js"), 0o644);
  await chmod(join(dir, "README.md"), 0o644);
  return dir;
}

interface RawEntry {
  readonly path: string;
  readonly type?: "File" | "SymbolicLink" | "Link" | "Directory" | "CharacterDevice";
  readonly content?: string;
  readonly linkpath?: string;
}

/** A hand-built .capsule, so hostile entries reach the unpacker exactly as an attacker writes them. */
async function rawArchive(name: string, entries: readonly RawEntry[]): Promise<string> {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.content ?? "");
    const h = new Header({
      path: e.path,
      type: e.type ?? "File",
      mode: 0o644,
      size: body.length,
      mtime: new Date(0),
      linkpath: e.linkpath,
    });
    const block = Buffer.alloc(512);
    h.encode(block, 0);
    blocks.push(block, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  const file = join(work, name);
  await writeFile(file, gzipSync(Buffer.concat(blocks)));
  return file;
}

async function expectPackageError(p: Promise<unknown>, code: string, message: string | RegExp) {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(PackageError);
  expect((e as PackageError).code).toBe(code);
  if (typeof message === "string") expect((e as Error).message).toBe(message);
  else expect((e as Error).message).toMatch(message);
}

describe("digestPackage", () => {
  it("hashes the canonical list of files", async () => {
    const dir = await makePackage(join(work, "p"));
    const d = await digestPackage(dir);
    expect(d.files.map((f) => f.path)).toEqual(["Capsule.toml", "README.md", "dist/main.js"]);
    const { createHash } = await import("node:crypto");
    const sha = (s: string) => createHash("sha256").update(s).digest("hex");
    const list = canonicalList(d.files);
    expect(list).toBe(
      `${sha(MANIFEST)} 644 Capsule.toml\n${sha("# demo\n")} 644 README.md\n${sha("export function handle() { return 1; }\n")} 644 dist/main.js\n`,
    );
    expect(d.digest).toBe(`sha256:${sha(list)}`);
  });

  it("sorts bytewise, not by locale", async () => {
    const dir = join(work, "s");
    await mkdir(dir);
    for (const n of ["b", "B", "a", "_", "é"]) await writeFile(join(dir, n), n);
    const d = await digestPackage(dir);
    expect(d.files.map((f) => f.path)).toEqual(["B", "_", "a", "b", "é"]);
  });

  it("changes when one byte changes", async () => {
    const dir = await makePackage(join(work, "p"));
    const before = (await digestPackage(dir)).digest;
    await writeFile(join(dir, "README.md"), "# demO\n");
    expect((await digestPackage(dir)).digest).not.toBe(before);
  });

  it("changes when a file is renamed", async () => {
    const dir = await makePackage(join(work, "p"));
    const before = (await digestPackage(dir)).digest;
    await rename(join(dir, "README.md"), join(dir, "README.txt"));
    expect((await digestPackage(dir)).digest).not.toBe(before);
  });

  it("changes when the executable bit changes, not for other mode bits", async () => {
    const dir = await makePackage(join(work, "p"));
    const before = (await digestPackage(dir)).digest;
    await chmod(join(dir, "README.md"), 0o600);
    expect((await digestPackage(dir)).digest).toBe(before);
    await chmod(join(dir, "README.md"), 0o755);
    const after = await digestPackage(dir);
    expect(after.digest).not.toBe(before);
    expect(after.files.find((f) => f.path === "README.md")?.mode).toBe(755);
  });

  it("excludes .git", async () => {
    const dir = await makePackage(join(work, "p"));
    const before = (await digestPackage(dir)).digest;
    await mkdir(join(dir, ".git"));
    await writeFile(join(dir, ".git", "HEAD"), "ref: refs/heads/main\n");
    expect((await digestPackage(dir)).digest).toBe(before);
  });

  it("refuses symlinks", async () => {
    const dir = await makePackage(join(work, "p"));
    await symlink("/etc/passwd", join(dir, "dist", "passwd"));
    await expectPackageError(
      digestPackage(dir),
      "unsupported-file-type",
      `${dir}: refusing "dist/passwd": a symbolic link; expected only regular files and directories`,
    );
  });

  it("refuses backslashes in names", async () => {
    const dir = await makePackage(join(work, "p"));
    await writeFile(join(dir, "a\\b"), "x");
    await expectPackageError(
      digestPackage(dir),
      "unsafe-path",
      `${dir}: refusing path "a\\\\b": contains a backslash; expected "/" as the only separator`,
    );
  });

  it("enforces file-count and size limits", async () => {
    const dir = await makePackage(join(work, "p"));
    await expectPackageError(
      digestPackage(dir, { maxFiles: 2, maxTotalBytes: 1 << 20 }),
      "too-many-files",
      `${dir}: more than 2 files; expected at most 2`,
    );
    await expectPackageError(
      digestPackage(dir, { maxFiles: 100, maxTotalBytes: 10 }),
      "too-large",
      `${dir}: files total more than 10 bytes; expected at most 10`,
    );
  });
});

describe("archives", () => {
  it("round-trips to the same digest and packs deterministically", async () => {
    const dir = await makePackage(join(work, "p"));
    await chmod(join(dir, "dist", "main.js"), 0o775);
    const a1 = join(work, "a1.capsule");
    const a2 = join(work, "a2.capsule");
    await packArchive(dir, a1);
    // Different mtimes and group-write bits must not change the bytes.
    await writeFile(join(dir, "README.md"), "# demo\n");
    await chmod(join(dir, "README.md"), 0o664);
    await packArchive(dir, a2);
    expect((await readFile(a1)).equals(await readFile(a2))).toBe(true);

    const out = join(work, "out");
    await unpackArchive(a1, out);
    expect((await digestPackage(out)).digest).toBe((await digestPackage(dir)).digest);
    expect((await stat(join(out, "dist", "main.js"))).mode & 0o111).not.toBe(0);
  });

  it("refuses path traversal and writes nothing", async () => {
    const archive = await rawArchive("trav.capsule", [
      { path: "ok", content: "x" },
      { path: "sub/../../evil", content: "x" },
    ]);
    const dest = join(work, "dest");
    await expectPackageError(
      unpackArchive(archive, dest),
      "unsafe-path",
      `${archive}: refusing path "sub/../../evil": contains ".."; expected a path inside the package`,
    );
    await expect(stat(dest)).rejects.toThrow(/ENOENT/);
  });

  it("refuses absolute paths", async () => {
    const src = join(work, "abs");
    await mkdir(src);
    await writeFile(join(src, "f"), "x");
    const archive = join(work, "abs.capsule");
    execFileSync("tar", ["-czPf", archive, join(src, "f")]);
    await expectPackageError(
      unpackArchive(archive, join(work, "dest")),
      "unsafe-path",
      /refusing path "\/.*\/abs\/f": absolute path; expected a path relative to the package root/,
    );
  });

  it("refuses symlinks and hard links in the archive", async () => {
    const src = join(work, "ln");
    await mkdir(src);
    await symlink("/etc/passwd", join(src, "passwd"));
    const archive = join(work, "ln.capsule");
    execFileSync("tar", ["-czf", archive, "-C", src, "passwd"]);
    await expectPackageError(
      unpackArchive(archive, join(work, "dest")),
      "unsupported-file-type",
      `${archive}: refusing "passwd": entry type SymbolicLink; expected only files and directories`,
    );
    const src2 = join(work, "hl");
    await mkdir(src2);
    await writeFile(join(src2, "a"), "x");
    execFileSync("ln", [join(src2, "a"), join(src2, "b")]);
    const archive2 = join(work, "hl.capsule");
    execFileSync("tar", ["-czf", archive2, "-C", src2, "a", "b"]);
    await expectPackageError(
      unpackArchive(archive2, join(work, "dest2")),
      "unsupported-file-type",
      `${archive2}: refusing "b": entry type Link; expected only files and directories`,
    );
  });

  it("refuses duplicate entries, devices and corrupt archives", async () => {
    const archive = await rawArchive("dup.capsule", [
      { path: "a", content: "good" },
      { path: "a", content: "evil" },
    ]);
    await expectPackageError(
      unpackArchive(archive, join(work, "d1")),
      "bad-archive",
      `${archive}: "a" appears twice`,
    );

    const dev = await rawArchive("dev.capsule", [{ path: "null", type: "CharacterDevice" }]);
    await expectPackageError(
      unpackArchive(dev, join(work, "d3")),
      "unsupported-file-type",
      `${dev}: refusing "null": entry type CharacterDevice; expected only files and directories`,
    );

    const junk = join(work, "junk.capsule");
    await writeFile(junk, Buffer.from([0x1f, 0x8b, 1, 2, 3, 4, 5]));
    await expectPackageError(
      unpackArchive(junk, join(work, "d2")),
      "bad-archive",
      /junk\.capsule: not a valid \.capsule archive: /,
    );
  });
});

describe("installPackage", () => {
  it("installs read-only under <store>/<name>/<version> and is idempotent", async () => {
    const dir = await makePackage(join(work, "p"));
    await chmod(join(dir, "dist", "main.js"), 0o755);
    const store = join(work, "store");
    const first = await installPackage(dir, store);
    const digest = (await digestPackage(dir)).digest;
    expect(first).toEqual({
      name: "demo",
      version: "1.0.0",
      digest,
      dir: join(store, "demo", "1.0.0"),
      installed: true,
    });
    expect((await stat(join(first.dir, "README.md"))).mode & 0o777).toBe(0o444);
    expect((await stat(join(first.dir, "dist", "main.js"))).mode & 0o777).toBe(0o555);
    expect((await stat(join(first.dir, "dist"))).mode & 0o777).toBe(0o555);
    expect((await stat(first.dir)).mode & 0o777).toBe(0o555);
    await verifyInstalled(first.dir, digest);

    const again = await installPackage(dir, store);
    expect(again).toEqual({ ...first, installed: false });
  });

  it("installs from an archive with the same digest", async () => {
    const dir = await makePackage(join(work, "p"));
    const archive = join(work, "demo.capsule");
    await packArchive(dir, archive);
    const r = await installPackage(archive, join(work, "store"));
    expect(r.digest).toBe((await digestPackage(dir)).digest);
  });

  it("refuses a different digest under the same name and version", async () => {
    const dir = await makePackage(join(work, "p"));
    const store = join(work, "store");
    const first = await installPackage(dir, store);
    await writeFile(join(dir, "README.md"), "# changed\n");
    const second = (await digestPackage(dir)).digest;
    await expectPackageError(
      installPackage(dir, store),
      "version-conflict",
      `demo@1.0.0 is already installed with ${first.digest}; refusing a different package ${second} under the same version (bump the version)`,
    );
  });

  it("refuses an unexpected digest and a package without a valid manifest", async () => {
    const dir = await makePackage(join(work, "p"));
    const actual = (await digestPackage(dir)).digest;
    await expectPackageError(
      installPackage(dir, join(work, "store"), { expectedDigest: `sha256:${"0".repeat(64)}` }),
      "digest-mismatch",
      `${dir}: digest is ${actual}; expected sha256:${"0".repeat(64)}`,
    );
    const bad = await makePackage(join(work, "bad"), "[package]\nname = 1\n");
    await expect(installPackage(bad, join(work, "store"))).rejects.toThrow(
      /Capsule\.toml:2: package\.name: expected a string, got number 1/,
    );
  });

  it("verifyInstalled detects tampering and writable files", async () => {
    const dir = await makePackage(join(work, "p"));
    const store = join(work, "store");
    const r = await installPackage(dir, store);
    const file = join(r.dir, "README.md");
    await chmod(file, 0o644);
    await expectPackageError(
      verifyInstalled(r.dir, r.digest),
      "writable",
      `${r.dir}: "README.md" is writable (mode 644); expected read-only`,
    );
    await chmod(r.dir, 0o755);
    await writeFile(file, "tampered");
    const now = (await digestPackage(r.dir)).digest;
    await expectPackageError(
      verifyInstalled(r.dir, r.digest),
      "digest-mismatch",
      `${r.dir}: digest is ${now}; expected ${r.digest}`,
    );
    await uninstallPackage(store, "demo", "1.0.0");
    await expect(stat(r.dir)).rejects.toThrow(/ENOENT/);
  });
});
