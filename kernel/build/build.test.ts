import {
  cp,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManifestError, ManifestNotFoundError } from "../../core/manifest/errors.js";
import { parseManifest } from "../../core/manifest/parse.js";
import { digestPackage } from "../../core/package/digest.js";
import type { CallContext } from "../../sidecar/abi/host.js";
import { CoreWasmEngine } from "../../sidecar/engine/wasm/core-engine.js";
import { QuickJsEngine } from "../../sidecar/engine/wasm/quickjs-engine.js";
import { RecordingHost } from "../../test/fixtures/wasm/recording-host.js";
import { compileWat } from "../../test/fixtures/wasm/wat.js";
import { type BuiltCapsule, buildCapsule } from "./build.js";
import { isNodeBuiltin } from "./bundle-quickjs.js";
import { BuildError } from "./errors.js";

const FIXTURES = new URL("../../test/fixtures/build/", import.meta.url).pathname;

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "astrid-build-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

let n = 0;
/** A private copy of a fixture folder (tests edit sources; the repo copy stays untouched). */
async function fixture(name: string): Promise<string> {
  const dir = join(work, `src-${n++}`, name);
  await cp(join(FIXTURES, name), dir, { recursive: true });
  for (const wat of ["guest.wat"]) {
    const path = join(dir, wat);
    const source = await readFile(path, "utf8").catch(() => undefined);
    if (source !== undefined) await writeFile(join(dir, "guest.wasm"), await compileWat(source));
  }
  return dir;
}

const outDir = (): string => join(work, `out-${n++}`);

async function refusal(p: Promise<unknown>): Promise<BuildError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof BuildError) return e;
    throw e;
  }
  throw new Error("expected the build to fail");
}

function callCtx(): CallContext {
  return {
    callId: "c1",
    session: "s1",
    principal: "p1",
    capsule: "greeter",
    token: undefined,
    deadline: Date.now() + 60_000,
  };
}

describe("buildCapsule: QuickJS (TypeScript) capsules", () => {
  let src: string;
  let built: BuiltCapsule;
  beforeAll(async () => {
    src = await fixture("quickjs-ts");
    built = await buildCapsule(src, { outDir: outDir() });
  });

  it("writes Capsule.toml byte for byte and one bundle, nothing else", async () => {
    expect(built).toMatchObject({ name: "greeter", version: "0.1.0", engine: "quickjs" });
    expect(built.files).toEqual(["Capsule.toml", "dist/main.js"]);
    expect(await readFile(join(built.dir, "Capsule.toml"))).toEqual(
      await readFile(join(src, "Capsule.toml")),
    );
    expect(built.dir.endsWith("/greeter-0.1.0")).toBe(true);
  });

  it("reports the digest core/package computes for the folder", async () => {
    expect(built.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect((await digestPackage(built.dir)).digest).toBe(built.digest);
  });

  it("inlines the local helper module: the bundle imports nothing", async () => {
    const code = await readFile(join(built.dir, "dist/main.js"), "utf8");
    expect(code).toContain("function greeting(name, times)");
    expect(code).not.toMatch(/^\s*import\b/m);
    expect(code).toMatch(/export \{\s*execute\s*\}/);
  });

  it("runs in the real QuickJS engine, reaching the world only through the host", async () => {
    const code = await readFile(join(built.dir, "dist/main.js"), "utf8");
    const engine = await QuickJsEngine.create({
      source: code,
      memoryMb: 32,
      stackKb: 256,
      timeoutMs: 5_000,
      name: "greeter",
    });
    try {
      const host = new RecordingHost({ "cwd://names/ada.txt": "Ada\n" });
      const input = { file: "cwd://names/ada.txt" };
      expect(await engine.invoke("execute", input, callCtx(), host)).toEqual({
        text: "Hello, Ada, for the first time",
      });
      expect(await engine.invoke("execute", input, callCtx(), host)).toEqual({
        text: "Hello, Ada, for the 2nd time",
      });
      expect(host.methods()).toEqual(["fsRead", "kvGet", "kvSet", "fsRead", "kvGet", "kvSet"]);
      expect(host.calls.filter((c) => c.method === "log").map((c) => c.args)).toEqual([
        ["info", "greeted", { name: "Ada", times: 1 }],
        ["info", "greeted", { name: "Ada", times: 2 }],
      ]);
    } finally {
      await engine.stop();
    }
  });

  it("gives the same digest and archive bytes when built twice, from two places", async () => {
    const again = await buildCapsule(await fixture("quickjs-ts"), {
      outDir: outDir(),
      archive: true,
    });
    const third = await buildCapsule(src, { outDir: outDir(), archive: true });
    expect(again.digest).toBe(built.digest);
    expect(third.digest).toBe(built.digest);
    expect(again.archive?.endsWith("/greeter-0.1.0.capsule")).toBe(true);
    expect(await readFile(again.archive ?? "")).toEqual(await readFile(third.archive ?? ""));
  });

  it("ignores a tsconfig.json above the capsule folder", async () => {
    const plain = await fixture("quickjs-ts");
    const nested = await fixture("quickjs-ts");
    // useDefineForClassFields changes how esbuild emits a class field.
    await writeFile(
      join(nested, "..", "tsconfig.json"),
      '{ "compilerOptions": { "useDefineForClassFields": false } }\n',
    );
    for (const dir of [plain, nested]) {
      await writeFile(join(dir, "src/index.ts"), "export class Tally { n = 0; }\n", { flag: "a" });
    }
    const a = await buildCapsule(plain, { outDir: outDir() });
    const b = await buildCapsule(nested, { outDir: outDir() });
    expect(b.digest).toBe(a.digest);
  });

  it("changes the digest when one source byte changes", async () => {
    const changed = await fixture("quickjs-ts");
    const helper = join(changed, "src/greeting.ts");
    await writeFile(helper, (await readFile(helper, "utf8")).replace("Hello", "Hallo"));
    const other = await buildCapsule(changed, { outDir: outDir() });
    expect(other.digest).not.toBe(built.digest);
  });

  it("replaces a previous build of the same version cleanly", async () => {
    const out = outDir();
    const first = await buildCapsule(src, { outDir: out });
    await writeFile(join(first.dir, "stale.txt"), "left over");
    const second = await buildCapsule(src, { outDir: out });
    expect(second.files).toEqual(["Capsule.toml", "dist/main.js"]);
    expect(second.digest).toBe(built.digest);
  });

  it("refuses a Node built-in import: a capsule has no ambient authority", async () => {
    const dir = await fixture("quickjs-node-fs");
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.code).toBe("ambient-authority");
    expect(err.message).toBe(
      `${dir}: cannot bundle src/index.ts:\n` +
        '  src/index.ts:1:30: imports the Node built-in "node:fs"; a capsule has no ambient authority, expected the astrid host API (astrid.fs, astrid.net, …) instead',
    );
  });

  it("refuses bare built-in names and their sub-paths too", async () => {
    const dir = await fixture("quickjs-node-fs");
    await writeFile(
      join(dir, "src/index.ts"),
      'import { readFile } from "fs/promises";\nexport const execute = () => readFile("/etc/hostname");\n',
    );
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.code).toBe("ambient-authority");
    expect(err.message).toContain('imports the Node built-in "fs/promises"');
    expect(["fs", "node:test", "child_process", "worker_threads"].every(isNodeBuiltin)).toBe(true);
    expect(["./fs", "fsx", "zod", "@scope/fs"].some(isNodeBuiltin)).toBe(false);
  });

  it("refuses an import that cannot be bundled, naming it", async () => {
    const dir = await fixture("quickjs-unresolved");
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.code).toBe("bundle-failed");
    expect(err.message).toBe(
      `${dir}: cannot bundle src/index.js:\n` +
        '  src/index.js:1:21: cannot bundle the import "astrid-no-such-package": not found; expected a relative module or a package installed in node_modules (a QuickJS capsule cannot load anything at run time)',
    );
  });

  it("refuses a bundle that does not export a [[handler]] function", async () => {
    const dir = await fixture("quickjs-ts");
    const toml = join(dir, "Capsule.toml");
    await writeFile(
      toml,
      `${await readFile(toml, "utf8")}\n[[handler]]\ntopic = "tool.v1.execute.wave"\nfunction = "wave"\n`,
    );
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.code).toBe("missing-export");
    expect(err.message).toBe(
      `${dir}: the bundle of src/index.ts does not export "wave" (handler[1].function); it exports "execute"; expected every [[handler]] function to be an export`,
    );
  });

  it("refuses two entries (src/index.ts and src/index.js)", async () => {
    const dir = await fixture("quickjs-ts");
    await writeFile(join(dir, "src/index.js"), "export const execute = () => 1;\n");
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.message).toBe(
      `${dir}: found both src/index.ts and src/index.js; expected exactly one entry`,
    );
  });

  it("re-bundles a prebuilt module when there is no src/index entry", async () => {
    const dir = await fixture("quickjs-ts");
    await rm(join(dir, "src"), { recursive: true });
    await mkdir(join(dir, "dist"));
    await writeFile(join(dir, "dist/main.js"), "export function execute() { return 42; }\n");
    const b = await buildCapsule(dir, { outDir: outDir() });
    expect(b.files).toEqual(["Capsule.toml", "dist/main.js"]);
    expect(await readFile(join(b.dir, "dist/main.js"), "utf8")).toContain("return 42;");
  });

  it("refuses a memory_mb the QuickJS engine could not run", async () => {
    const dir = await fixture("quickjs-ts");
    const toml = join(dir, "Capsule.toml");
    await writeFile(
      toml,
      (await readFile(toml, "utf8")).replace("memory_mb = 32", "memory_mb = 8"),
    );
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.message).toBe(
      `${dir}: wasm.memory_mb is 8; expected at least 20 for a QuickJS capsule (the interpreter itself needs 16 MiB)`,
    );
  });
});

describe("buildCapsule: core WASM capsules", () => {
  it("copies a valid module unchanged, without its WAT source", async () => {
    const dir = await fixture("core-good");
    const b = await buildCapsule(dir, { outDir: outDir() });
    expect(b).toMatchObject({ name: "echo-core", version: "1.0.0", engine: "core" });
    expect(b.files).toEqual(["Capsule.toml", "guest.wasm"]);
    expect(await readFile(join(b.dir, "guest.wasm"))).toEqual(
      await readFile(join(dir, "guest.wasm")),
    );
  });

  it("packages a module the real core engine runs", async () => {
    const b = await buildCapsule(await fixture("core-good"), { outDir: outDir() });
    const engine = await CoreWasmEngine.create({
      wasm: await readFile(join(b.dir, "guest.wasm")),
      memoryMb: 1,
      timeoutMs: 5_000,
      name: "echo-core",
    });
    try {
      const input = { said: ["hi", 1, null] };
      expect(await engine.invoke("echo", input, callCtx(), new RecordingHost())).toEqual(input);
    } finally {
      await engine.stop();
    }
  });

  it("refuses a module missing alloc and a handler, naming both", async () => {
    const dir = await fixture("core-missing-export");
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.code).toBe("missing-export");
    expect(err.message).toBe(
      `${dir}/guest.wasm: missing export function "alloc", function "summarise" (handler[1].function); expected a core module exporting memory, alloc and every [[handler]] function`,
    );
  });

  it("refuses a file that is not WebAssembly", async () => {
    const dir = await fixture("core-good");
    await writeFile(join(dir, "guest.wasm"), "(module)\n");
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.message).toBe(
      `${dir}/guest.wasm: not a WebAssembly module; expected the magic bytes \\0asm at the start`,
    );
  });

  it("refuses bytes with the magic that do not validate", async () => {
    const dir = await fixture("core-good");
    const good = await readFile(join(dir, "guest.wasm"));
    await writeFile(join(dir, "guest.wasm"), good.subarray(0, good.length - 3));
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.message).toBe(
      `${dir}/guest.wasm: not a valid WebAssembly module (WebAssembly.validate failed)`,
    );
  });

  it("refuses a module the engine would refuse: memory maximum above memory_mb", async () => {
    const dir = await fixture("core-good");
    const wat = (await readFile(join(dir, "guest.wat"), "utf8")).replace("1 16)", "1 32)");
    await writeFile(join(dir, "guest.wasm"), await compileWat(wat));
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.code).toBe("bad-module");
    expect(err.message).toBe(
      `${dir}/guest.wasm: its memory maximum is 2 MiB, above the budget of 1 MiB`,
    );
  });

  it("refuses a missing module file", async () => {
    const dir = await fixture("core-good");
    await rm(join(dir, "guest.wasm"));
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.message).toBe(
      `${dir}: the module "guest.wasm" does not exist; expected a file in the capsule folder`,
    );
  });
});

describe("buildCapsule: mcp capsules", () => {
  it("copies the folder minus node_modules, VCS metadata and its own output", async () => {
    const dir = await fixture("mcp");
    await mkdir(join(dir, "node_modules/dep"), { recursive: true });
    await writeFile(join(dir, "node_modules/dep/index.js"), "x");
    await mkdir(join(dir, ".git"));
    await writeFile(join(dir, ".git/HEAD"), "ref: refs/heads/main\n");
    const out = join(dir, "build");
    const first = await buildCapsule(dir, { outDir: out });
    expect(first.engine).toBe("mcp");
    expect(first.files).toEqual(["Capsule.toml", "lib/server.js", "run.sh"]);
    expect((await stat(join(first.dir, "run.sh"))).mode & 0o777).toBe(0o755);
    expect((await stat(join(first.dir, "lib/server.js"))).mode & 0o777).toBe(0o644);
    // The second build sees the first one's output inside the folder and must not pack it.
    const second = await buildCapsule(dir, { outDir: out, archive: true });
    expect(second.files).toEqual(first.files);
    expect(second.digest).toBe(first.digest);
  });

  it("refuses a symbolic link rather than copying what it points at", async () => {
    const dir = await fixture("mcp");
    await symlink("/etc/hostname", join(dir, "lib/host.txt"));
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.code).toBe("unsafe-source");
    expect(err.message).toBe(
      `${dir}: "lib/host.txt" is a symbolic link; expected only regular files and directories in an mcp capsule folder`,
    );
  });
});

describe("buildCapsule: static capsules", () => {
  it("copies exactly the prompt and context files the manifest names", async () => {
    const dir = await fixture("static");
    const b = await buildCapsule(dir, { outDir: outDir() });
    expect(b.engine).toBe("static");
    expect(b.files).toEqual(["Capsule.toml", "docs/guide.md", "prompts/system.md"]);
    expect(await readFile(join(b.dir, "docs/guide.md"), "utf8")).toBe(
      "# Style guide\n\nShort sentences. No jargon.\n",
    );
  });

  it("refuses missing files, naming every one", async () => {
    const dir = await fixture("static-missing");
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.code).toBe("missing-file");
    expect(err.message).toBe(
      `${dir}: prompt "review" file "prompts/review.md" does not exist; expected a file in the capsule folder\n` +
        `${dir}: context file "docs/checklist.md" does not exist; expected a file in the capsule folder`,
    );
  });

  it("refuses a prompt file that is a link out of the folder", async () => {
    const dir = await fixture("static");
    await rm(join(dir, "prompts/system.md"));
    await symlink("/etc/hostname", join(dir, "prompts/system.md"));
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.message).toBe(
      `${dir}: prompt "system" file "prompts/system.md" is a symbolic link; expected a regular file (a link could pull a file from outside the capsule into the package)`,
    );
  });

  it("refuses a prompt file under a directory linked out of the folder", async () => {
    const dir = await fixture("static");
    const elsewhere = join(work, `elsewhere-${n++}`);
    await cp(join(dir, "docs"), elsewhere, { recursive: true });
    await rm(join(dir, "docs"), { recursive: true });
    await symlink(elsewhere, join(dir, "docs"));
    const err = await refusal(buildCapsule(dir, { outDir: outDir() }));
    expect(err.message).toBe(
      `${dir}: context file "docs/guide.md" resolves outside the capsule folder (through a linked directory); expected a file inside it`,
    );
  });
});

describe("buildCapsule: manifest and output errors", () => {
  it("passes the parser's errors through unchanged (file, line, field)", async () => {
    const dir = await fixture("static");
    const toml = join(dir, "Capsule.toml");
    const broken = (await readFile(toml, "utf8")).replace('version = "1.2.0"', 'version = "v1"');
    await writeFile(toml, broken);
    const err = await buildCapsule(dir, { outDir: outDir() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ManifestError);
    let direct: unknown;
    try {
      parseManifest(broken, toml);
    } catch (e) {
      direct = e;
    }
    expect((err as ManifestError).message).toBe((direct as ManifestError).message);
    expect((err as ManifestError).issues).toEqual([
      {
        file: toml,
        line: 4,
        column: 1,
        field: "package.version",
        message: 'expected a semver version like "1.2.3", got "v1"',
      },
    ]);
  });

  it("names a missing Capsule.toml", async () => {
    const dir = await fixture("static");
    await rm(join(dir, "Capsule.toml"));
    const err = await buildCapsule(dir, { outDir: outDir() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ManifestNotFoundError);
    expect((err as Error).message).toBe(
      `${dir}/Capsule.toml: no such file; expected a Capsule.toml here`,
    );
  });

  it("names a missing source folder", async () => {
    const err = await refusal(buildCapsule(join(work, "nope"), { outDir: outDir() }));
    expect(err.message).toBe(
      `${join(work, "nope")}: no such directory; expected a capsule source folder`,
    );
  });

  it("refuses an output that would replace the source folder", async () => {
    const dir = await fixture("static");
    const parent = join(dir, "..");
    const named = join(parent, "style-guide-1.2.0");
    await cp(dir, named, { recursive: true });
    const err = await refusal(buildCapsule(named, { outDir: parent }));
    expect(err.code).toBe("bad-output");
    expect(err.message).toBe(
      `${named}: the output ${named} would replace or hold the capsule folder itself; expected an output folder elsewhere`,
    );
    expect((await stat(join(named, "NOTES.txt"))).isFile()).toBe(true);
  });

  it("leaves no staging folder behind when a build fails", async () => {
    const out = outDir();
    await refusal(buildCapsule(await fixture("static-missing"), { outDir: out }));
    const b = await buildCapsule(await fixture("static"), { outDir: out });
    expect(await readdir(out)).toEqual([`${b.name}-${b.version}`]);
  });
});
