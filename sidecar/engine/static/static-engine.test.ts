/** StaticEngine on real package folders, with sections from the real manifest parser. */
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseManifest } from "../../../core/manifest/parse.js";
import { ContextBundle } from "../../../core/protocol/messages.js";
import { StaticEngineError } from "./errors.js";
import { StaticEngine, type StaticSection } from "./static-engine.js";

function section(body: string): StaticSection {
  const m = parseManifest(
    `[package]\nname = "rules"\nversion = "1.0.0"\ndescription = "context"\n\n${body}`,
  );
  if (m.engine.type !== "static") throw new Error("expected a static engine");
  const { type: _, ...rest } = m.engine;
  return rest;
}

async function failure(p: Promise<unknown> | (() => unknown)): Promise<StaticEngineError> {
  let e: unknown;
  try {
    await (typeof p === "function" ? p() : p);
  } catch (x) {
    e = x;
  }
  expect(e).toBeInstanceOf(StaticEngineError);
  return e as StaticEngineError;
}

describe("StaticEngine", () => {
  let scratch: string;
  let pkg: string;
  beforeEach(async () => {
    scratch = await mkdtemp(path.join(tmpdir(), "astrid-static-"));
    pkg = path.join(scratch, "pkg");
    await mkdir(path.join(pkg, "prompts"), { recursive: true });
    await mkdir(path.join(pkg, "docs"), { recursive: true });
    await writeFile(path.join(pkg, "prompts/review.md"), "Review the diff.\n");
    await writeFile(path.join(pkg, "AGENTS.md"), "Be kind.\n");
    await writeFile(path.join(pkg, "docs/style.md"), "Short sentences.\n");
    await writeFile(path.join(scratch, "secret.txt"), "sidecar key\n");
  });
  afterEach(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  const rules = () =>
    section(`[static]
prompts = [
  { name = "greet", text = "Say hello." },
  { name = "review", file = "prompts/review.md" },
]
context_files = [
  { path = "AGENTS.md", description = "house rules" },
  { path = "docs/style.md", description = "style" },
]
`);

  it("loads prompts from text and from files, and context files, into a valid bundle", async () => {
    const engine = await StaticEngine.load(pkg, rules());
    const bundle = engine.bundle();
    expect(bundle).toEqual({
      prompts: [
        { name: "greet", text: "Say hello." },
        { name: "review", text: "Review the diff.\n" },
      ],
      files: [
        { path: "AGENTS.md", description: "house rules", content: "Be kind.\n" },
        { path: "docs/style.md", description: "style", content: "Short sentences.\n" },
      ],
    });
    expect(ContextBundle.parse(bundle)).toEqual(bundle);
  });

  it("answers the names asked for: prompt names and file paths", async () => {
    const engine = await StaticEngine.load(pkg, rules());
    expect(engine.bundle(["review", "docs/style.md"])).toEqual({
      prompts: [{ name: "review", text: "Review the diff.\n" }],
      files: [{ path: "docs/style.md", description: "style", content: "Short sentences.\n" }],
    });
    expect(engine.bundle([])).toEqual({ prompts: [], files: [] });
  });

  it("refuses unknown names, listing the known ones", async () => {
    const engine = await StaticEngine.load(pkg, rules());
    const e = await failure(() => engine.bundle(["greet", "deploy", "README.md"]));
    expect(e.code).toBe("not_found");
    expect(e.message).toBe(
      'unknown context names "deploy", "README.md"; known prompts: "greet", "review"; known files: "AGENTS.md", "docs/style.md"',
    );
  });

  it("refuses a symlink that points out of the package", async () => {
    await symlink(path.join(scratch, "secret.txt"), path.join(pkg, "docs/leak.md"));
    const e = await failure(
      StaticEngine.load(
        pkg,
        section('[[context_file]]\npath = "docs/leak.md"\ndescription = "x"\n'),
      ),
    );
    expect(e.code).toBe("denied");
    expect(e.message).toBe(
      `context file "docs/leak.md": "docs/leak.md" resolves to ${JSON.stringify(path.join(scratch, "secret.txt"))}, outside the package; expected a file inside ${JSON.stringify(pkg)}`,
    );
  });

  it("refuses a symlinked directory that leads out of the package", async () => {
    await symlink(scratch, path.join(pkg, "up"));
    const e = await failure(
      StaticEngine.load(
        pkg,
        section('[static]\nprompts = [{ name = "p", file = "up/secret.txt" }]\n'),
      ),
    );
    expect(e.code).toBe("denied");
  });

  it("follows a symlink that stays inside the package", async () => {
    await symlink("../AGENTS.md", path.join(pkg, "docs/rules.md"));
    const engine = await StaticEngine.load(
      pkg,
      section('[[context_file]]\npath = "docs/rules.md"\ndescription = "alias"\n'),
    );
    expect(engine.bundle().files[0]?.content).toBe("Be kind.\n");
  });

  it("names a missing file", async () => {
    const e = await failure(
      StaticEngine.load(
        pkg,
        section('[static]\nprompts = [{ name = "p", file = "prompts/none.md" }]\n'),
      ),
    );
    expect(e.code).toBe("not_found");
    expect(e.message).toBe('prompt "p": "prompts/none.md" is not in the package (ENOENT)');
  });

  it("refuses a file above the per-file cap and context above the total cap", async () => {
    await writeFile(path.join(pkg, "docs/big.md"), "b".repeat(2000));
    const big = section('[[context_file]]\npath = "docs/big.md"\ndescription = "big"\n');
    const e = await failure(
      StaticEngine.load(pkg, big, { maxFileBytes: 1000, maxTotalBytes: 10_000 }),
    );
    expect(e.code).toBe("too_large");
    expect(e.message).toBe(
      'context file "docs/big.md": "docs/big.md" has 2000 bytes; the limit is 1000 bytes',
    );

    const t = await failure(
      StaticEngine.load(pkg, rules(), { maxFileBytes: 1000, maxTotalBytes: 40 }),
    );
    expect(t.message).toBe(
      'static context passes 40 bytes at context file "docs/style.md"; expected prompts and files of at most 40 bytes together',
    );
  });

  it("refuses a directory and a file that is not UTF-8", async () => {
    const dir = await failure(
      StaticEngine.load(pkg, section('[[context_file]]\npath = "docs"\ndescription = "d"\n')),
    );
    expect(dir.message).toBe('context file "docs": "docs" is not a regular file');
    await writeFile(path.join(pkg, "docs/bin.md"), Buffer.from([0xff, 0xfe, 0x00]));
    const bin = await failure(
      StaticEngine.load(
        pkg,
        section('[[context_file]]\npath = "docs/bin.md"\ndescription = "b"\n'),
      ),
    );
    expect(bin.message).toBe('context file "docs/bin.md": "docs/bin.md" is not UTF-8 text');
  });
});
