import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import { Worker } from "node:worker_threads";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FsRule } from "../../manifest/capability-rules.js";
import { parseFsRule } from "../../manifest/capability-rules.js";
import { FsGate } from "./fs.js";

const rules = (...entries: string[]): FsRule[] => entries.map(parseFsRule);
const { O_RDONLY, O_WRONLY, O_CREAT, O_RDWR } = fs.constants;

let base: string;
let ws: string;
let home: string;
let out: string;
let server: net.Server;

beforeAll(async () => {
  base = fs.realpathSync(fs.mkdtempSync(`${os.tmpdir()}/astrid-fsgate-`));
  ws = `${base}/ws`;
  home = `${base}/home`;
  out = `${base}/outside`;
  for (const d of [ws, home, out, `${ws}/src`, `${ws}/out`, `${ws}/deep`, `${out}/sub`]) {
    fs.mkdirSync(d, { recursive: true });
  }
  fs.mkdirSync(`${home}/.config`);
  fs.writeFileSync(`${home}/.config/x`, "h");
  fs.writeFileSync(`${ws}/a.txt`, "a");
  fs.writeFileSync(`${ws}/secret.env`, "s");
  fs.writeFileSync(`${ws}/src/main.ts`, "m");
  fs.writeFileSync(`${ws}/deep/secret.txt`, "lexical");
  fs.writeFileSync(`${out}/secret.txt`, "outside");
  fs.symlinkSync(out, `${ws}/link-out`);
  fs.symlinkSync(`${ws}/src`, `${ws}/link-in`);
  fs.symlinkSync(`${out}/sub`, `${ws}/deep/link`);
  fs.symlinkSync(`${ws}/secret.env`, `${ws}/src/link-secret`);
  fs.symlinkSync(`${out}/new.txt`, `${ws}/dangling`);
  fs.symlinkSync(out, `${base}/alias`);
  // Encoded and look-alike names are literal directories, never "..".
  fs.mkdirSync(`${ws}/%2e%2e`);
  fs.writeFileSync(`${ws}/%2e%2e/x.txt`, "enc");
  fs.mkdirSync(`${ws}/\u2024\u2024`);
  fs.writeFileSync(`${ws}/\u2024\u2024/x.txt`, "uni");
  execFileSync("mkfifo", [`${ws}/fifo`]);
  server = net.createServer();
  await new Promise<void>((resolve) => server.listen(`${ws}/sock`, resolve));
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  fs.rmSync(base, { recursive: true, force: true });
});

const gate = (read: string[], write: string[] = []) =>
  new FsGate({ read: rules(...read), write: rules(...write), workspace: ws, home });

describe("FsGate deny reasons", () => {
  const cases: [string, () => FsGate, "read" | "write", string, () => string][] = [
    [
      "outside the single root",
      () => gate(["cwd://**"]),
      "read",
      "/etc/passwd",
      () => `"/etc/passwd" is outside the workspace root "${ws}"`,
    ],
    [
      "outside several roots",
      () => gate(["cwd://**", "home://**"]),
      "read",
      "/etc/passwd",
      () => `"/etc/passwd" is outside every fs_read root`,
    ],
    [
      "symlink to a directory outside",
      () => gate(["cwd://**"]),
      "read",
      "link-out",
      () => `"${ws}/link-out" resolves to "${out}" outside the workspace root "${ws}"`,
    ],
    [
      "file behind an outside symlink",
      () => gate(["cwd://**"]),
      "read",
      "link-out/secret.txt",
      () =>
        `"${ws}/link-out/secret.txt" resolves to "${out}/secret.txt" outside the workspace root "${ws}"`,
    ],
    [
      "dot-dot out of the root",
      () => gate(["cwd://**"]),
      "read",
      "src/../../outside/secret.txt",
      () =>
        `"${ws}/src/../../outside/secret.txt" resolves to "${out}/secret.txt" outside the workspace root "${ws}"`,
    ],
    // The kernel resolves link/.. to the parent of the link's target; a lexical normalise
    // would have read ws/deep/secret.txt and allowed it.
    [
      "symlink then dot-dot (kernel, not lexical)",
      () => gate(["cwd://**"]),
      "read",
      "deep/link/../secret.txt",
      () =>
        `"${ws}/deep/link/../secret.txt" resolves to "${out}/secret.txt" outside the workspace root "${ws}"`,
    ],
    [
      "NUL byte",
      () => gate(["cwd://**"]),
      "read",
      "a.txt\u0000/../x",
      () => `"a.txt\\u0000/../x" contains a NUL byte`,
    ],
    ["empty path", () => gate(["cwd://**"]), "read", "", () => "expected a non-empty path"],
    [
      "missing file on read",
      () => gate(["cwd://**"]),
      "read",
      "missing.txt",
      () => `"${ws}/missing.txt" does not exist`,
    ],
    [
      "trailing slash on a file",
      () => gate(["cwd://**"]),
      "read",
      "a.txt/",
      () => `cannot resolve "${ws}/a.txt/" (ENOTDIR)`,
    ],
    [
      "FIFO",
      () => gate(["cwd://**"]),
      "read",
      "fifo",
      () => `"${ws}/fifo" is a FIFO; only regular files and directories are allowed`,
    ],
    [
      "socket",
      () => gate(["cwd://**"]),
      "read",
      "sock",
      () => `"${ws}/sock" is a socket; only regular files and directories are allowed`,
    ],
    [
      "device",
      () => gate(["/dev/**"]),
      "read",
      "/dev/null",
      () => `"/dev/null" is a character device; only regular files and directories are allowed`,
    ],
    [
      "inside but no rule matches",
      () => gate(["cwd://src/**"]),
      "read",
      "a.txt",
      () => `"${ws}/a.txt" is inside the workspace root "${ws}" but matches no fs_read rule`,
    ],
    [
      "in-root symlink to an ungranted file",
      () => gate(["cwd://src/**"]),
      "read",
      "src/link-secret",
      () =>
        `"${ws}/src/link-secret" resolves to "${ws}/secret.env" which is inside the workspace root "${ws}" but matches no fs_read rule`,
    ],
    [
      "no rules at all",
      () => gate([]),
      "read",
      "a.txt",
      () => `no fs_read rules are declared; "a.txt" denied`,
    ],
    [
      "write outside via dot-dot",
      () => gate([], ["cwd://**"]),
      "write",
      "out/../../outside/new.txt",
      () =>
        `"${ws}/out/../../outside/new.txt" resolves to "${out}/new.txt" outside the workspace root "${ws}"`,
    ],
    [
      "write of a new name through a symlink pointing outside",
      () => gate([], ["cwd://**"]),
      "write",
      "link-out/new.txt",
      () =>
        `"${ws}/link-out/new.txt" resolves to "${out}/new.txt" outside the workspace root "${ws}"`,
    ],
    [
      "write through an in-root file symlink to an outside file",
      () => gate([], ["cwd://**"]),
      "write",
      "deep/link/../secret.txt",
      () =>
        `"${ws}/deep/link/../secret.txt" resolves to "${out}/secret.txt" outside the workspace root "${ws}"`,
    ],
    [
      "write with dot-dot in the missing part",
      () => gate([], ["cwd://**"]),
      "write",
      "nonexist/../a.txt",
      () =>
        `"${ws}/nonexist/../a.txt" does not exist and its missing part "nonexist/../a.txt" is not plain names ("..")`,
    ],
    [
      "write through a dangling symlink",
      () => gate([], ["cwd://**"]),
      "write",
      "dangling",
      () =>
        `"${ws}/dangling" passes through "${ws}/dangling", a symlink whose target does not exist`,
    ],
    [
      "write a new name with a trailing slash",
      () => gate([], ["cwd://**"]),
      "write",
      "out/new/",
      () =>
        `"${ws}/out/new/" does not exist and its missing part "new/" is not plain names (empty segment or trailing /)`,
    ],
    [
      "write outside the write glob",
      () => gate(["cwd://**"], ["cwd://out/**"]),
      "write",
      "a.txt",
      () => `"${ws}/a.txt" is inside the workspace root "${ws}" but matches no fs_write rule`,
    ],
    [
      "write to a FIFO",
      () => gate([], ["cwd://**"]),
      "write",
      "fifo",
      () => `"${ws}/fifo" is a FIFO; only regular files and directories are allowed`,
    ],
    [
      "read rules do not grant writes",
      () => gate(["cwd://**"]),
      "write",
      "a.txt",
      () => `no fs_write rules are declared; "a.txt" denied`,
    ],
  ];
  it.each(cases)("%s", async (_name, make, access, path, reason) => {
    const g = make();
    const d = access === "read" ? await g.checkRead(path) : await g.checkWrite(path);
    expect(d).toEqual({ allowed: false, layer: "gate", reason: reason() });
  });
});

describe("FsGate allows", () => {
  const cases: [string, string[], string[], "read" | "write", () => string, string][] = [
    ["a workspace file", ["cwd://**"], [], "read", () => "a.txt", "cwd://**"],
    ["the workspace itself under **", ["cwd://**"], [], "read", () => ws, "cwd://**"],
    [
      "an in-root symlink, matched on its target",
      ["cwd://src/**"],
      [],
      "read",
      () => "link-in/main.ts",
      "cwd://src/**",
    ],
    [
      "a percent-encoded name, literally",
      ["cwd://%2e%2e/**"],
      [],
      "read",
      () => "%2e%2e/x.txt",
      "cwd://%2e%2e/**",
    ],
    [
      "a look-alike name, literally",
      ["cwd://\u2024\u2024/**"],
      [],
      "read",
      () => "\u2024\u2024/x.txt",
      "cwd://\u2024\u2024/**",
    ],
    [
      "dot segments that stay inside",
      ["cwd://src/**"],
      [],
      "read",
      () => "out/./../src/main.ts",
      "cwd://src/**",
    ],
    [
      "a home file",
      ["home://.config/**"],
      [],
      "read",
      () => `${home}/.config/x`,
      "home://.config/**",
    ],
    [
      "an absolute rule whose prefix is a symlink",
      ["@base/alias/**"],
      [],
      "read",
      () => `${out}/secret.txt`,
      "@base/alias/**",
    ],
    [
      "an exact absolute file",
      ["@base/outside/secret.txt"],
      [],
      "read",
      () => `${base}/alias/secret.txt`,
      "@base/outside/secret.txt",
    ],
    ["a new file", [], ["cwd://out/**"], "write", () => "out/new.txt", "cwd://out/**"],
    ["a new nested file", [], ["cwd://out/**"], "write", () => "out/a/b/c.txt", "cwd://out/**"],
  ];
  it.each(cases)("%s", async (_name, read, write, access, path, rule) => {
    // Temp paths are known only after beforeAll, so absolute rules name "@base".
    const sub = (s: string) => s.replaceAll("@base", base);
    const g = gate(read.map(sub), write.map(sub));
    const d = access === "read" ? await g.checkRead(path()) : await g.checkWrite(path());
    expect(d).toEqual({ allowed: true, layer: "gate", rule: sub(rule) });
  });

  it("a workspace that does not exist grants nothing (fail closed)", async () => {
    const g = new FsGate({ read: rules("cwd://**"), write: [], workspace: `${base}/nope`, home });
    expect(await g.checkRead("a.txt")).toEqual({
      allowed: false,
      layer: "gate",
      reason: `relative path "a.txt" is read against the workspace root, which cannot be resolved`,
    });
    expect((await g.checkRead(`${ws}/a.txt`)).allowed).toBe(false);
  });

  it("refuses a hand-built rule that differs from its source", () => {
    const forged: FsRule = { source: "cwd://src/**", root: "cwd", glob: "**" };
    expect(() => new FsGate({ read: [forged], write: [], workspace: ws, home })).toThrow(
      `fs rule "cwd://src/**" does not match its parsed form (root "cwd", glob "src/**")`,
    );
  });
});

describe("FsGate.checkedOpen", () => {
  it("opens an allowed file and refuses what the check refuses", async () => {
    const g = gate(["cwd://**"], ["cwd://out/**"]);
    const ok = await g.checkedOpen("a.txt", O_RDONLY);
    expect(ok.decision).toEqual({ allowed: true, layer: "gate", rule: "cwd://**" });
    expect(await ok.handle?.readFile("utf8")).toBe("a");
    await ok.handle?.close();

    const made = await g.checkedOpen("out/created.txt", O_WRONLY | O_CREAT);
    expect(made.decision.allowed).toBe(true);
    await made.handle?.writeFile("new");
    await made.handle?.close();
    expect(fs.readFileSync(`${ws}/out/created.txt`, "utf8")).toBe("new");

    const rw = await g.checkedOpen("a.txt", O_RDWR);
    expect(rw.decision).toEqual({
      allowed: false,
      layer: "gate",
      reason: `"${ws}/a.txt" is inside the workspace root "${ws}" but matches no fs_write rule`,
    });
    const outside = await g.checkedOpen("link-out/secret.txt", O_RDONLY);
    expect(outside.handle).toBeUndefined();
    expect(outside.decision.allowed).toBe(false);
  });

  it("never hands out a descriptor outside the root while symlinks are swapped", async () => {
    // Two races run in a real thread: a file symlink flipping between an inside and an
    // outside target, and a directory component flipping between a real directory and a
    // symlink to an outside directory.
    fs.writeFileSync(`${ws}/inside.txt`, "inside");
    fs.mkdirSync(`${ws}/target`);
    fs.writeFileSync(`${ws}/target/f.txt`, "inside");
    fs.mkdirSync(`${out}/dir`);
    fs.writeFileSync(`${out}/dir/f.txt`, "outside");
    fs.symlinkSync(`${out}/dir`, `${ws}/.lnk`);
    fs.symlinkSync(`${ws}/inside.txt`, `${ws}/sw`);
    const stop = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(
      `const fs = require("node:fs");
       const { workerData: w, parentPort } = require("node:worker_threads");
       parentPort.postMessage("started");
       let n = 0;
       while (Atomics.load(w.stop, 0) === 0) {
         const t = n++ % 2 === 0 ? w.out + "/secret.txt" : w.ws + "/inside.txt";
         try { fs.unlinkSync(w.ws + "/.sw"); } catch {}
         fs.symlinkSync(t, w.ws + "/.sw");
         fs.renameSync(w.ws + "/.sw", w.ws + "/sw");
         fs.renameSync(w.ws + "/target", w.ws + "/.stash");
         fs.renameSync(w.ws + "/.lnk", w.ws + "/target");
         fs.renameSync(w.ws + "/target", w.ws + "/.lnk");
         fs.renameSync(w.ws + "/.stash", w.ws + "/target");
       }`,
      { eval: true, workerData: { ws, out, stop } },
    );
    await new Promise((resolve) => worker.once("message", resolve));
    const g = gate(["cwd://**"]);
    let allowed = 0;
    let denied = 0;
    const escapes: string[] = [];
    try {
      for (let i = 0; i < 1500; i++) {
        for (const path of ["sw", "target/f.txt"]) {
          const r = await g.checkedOpen(path, O_RDONLY);
          if (!r.handle) {
            denied++;
            continue;
          }
          allowed++;
          const where = await fsp.readlink(`/proc/self/fd/${r.handle.fd}`);
          const text = await r.handle.readFile("utf8");
          await r.handle.close();
          if (!where.startsWith(`${ws}/`) || text !== "inside") escapes.push(`${where}: ${text}`);
        }
      }
    } finally {
      Atomics.store(stop, 0, 1);
      await new Promise((resolve) => worker.once("exit", resolve));
    }
    expect(escapes).toEqual([]);
    expect(allowed).toBeGreaterThan(0);
    expect(denied).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Property: on random trees with symlinks pointing inside and outside, with "..", "." and
// encoded / look-alike names in requests, a read is allowed iff the object the *kernel* reaches
// (stat(2), by inode) is an entry found by walking the workspace without following symlinks,
// and that entry's path matches a rule. The oracle never calls realpath, so it is independent
// of the code under test.
// ---------------------------------------------------------------------------------------------

const NAMES = ["a", "b", "x.txt", "y.txt", ".h", "%2e%2e", "\u2024\u2024", "\uff41"] as const;
const SEGMENTS = [...NAMES, "..", ".", ""] as const;

interface Op {
  parent: number;
  name: string;
  kind: "dir" | "file" | "link";
  target: number | string;
}

const opArb: fc.Arbitrary<Op> = fc.record({
  parent: fc.nat(50),
  name: fc.constantFrom(...NAMES),
  kind: fc.oneof(
    { arbitrary: fc.constant("dir" as const), weight: 2 },
    { arbitrary: fc.constant("file" as const), weight: 2 },
    { arbitrary: fc.constant("link" as const), weight: 1 },
  ),
  target: fc.oneof(
    fc.nat(50),
    fc
      .array(fc.constantFrom("..", ".", "a", "x.txt"), { minLength: 1, maxLength: 4 })
      .map((s) => s.join("/")),
  ),
});

/** Builds the tree; returns every created path (ws and outside), in creation order. */
function buildTree(root: string, ops: readonly Op[]): string[] {
  const wsDir = `${root}/ws`;
  const outDir = `${root}/out`;
  fs.mkdirSync(wsDir);
  fs.mkdirSync(outDir);
  fs.writeFileSync(`${outDir}/x.txt`, "o");
  const dirs = [wsDir, outDir];
  const nodes = [wsDir, outDir, `${outDir}/x.txt`];
  for (const op of ops) {
    const path = `${dirs[op.parent % dirs.length]}/${op.name}`;
    if (fs.existsSync(path) || isLink(path)) continue;
    if (op.kind === "dir") {
      fs.mkdirSync(path);
      dirs.push(path);
    } else if (op.kind === "file") {
      fs.writeFileSync(path, "f");
    } else {
      const target = typeof op.target === "number" ? nodes[op.target % nodes.length]! : op.target;
      fs.symlinkSync(target, path);
    }
    nodes.push(path);
  }
  return nodes;
}

function isLink(path: string): boolean {
  try {
    return fs.lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/** dev:ino → path relative to the workspace, for every non-symlink entry under it. */
function inodesInside(wsDir: string): Map<string, string> {
  const map = new Map<string, string>();
  const walk = (dir: string, rel: string) => {
    const st = fs.lstatSync(dir);
    map.set(`${st.dev}:${st.ino}`, rel);
    for (const name of fs.readdirSync(dir)) {
      const p = `${dir}/${name}`;
      const childRel = rel === "" ? name : `${rel}/${name}`;
      const cst = fs.lstatSync(p);
      if (cst.isDirectory()) walk(p, childRel);
      else if (cst.isFile()) map.set(`${cst.dev}:${cst.ino}`, childRel);
    }
  };
  walk(wsDir, "");
  return map;
}

// Oracle forms of the two rules below, written by hand rather than through picomatch.
const oracleMatches = (rel: string): boolean =>
  ["a", "b"].some((d) => rel === d || rel.startsWith(`${d}/`)) ||
  (rel !== "" && (rel.split("/").pop() ?? "").endsWith(".txt"));

describe("FsGate property: allow iff the kernel's target is inside and matches", () => {
  it("holds on random trees", async () => {
    const parent = fs.mkdtempSync(`${os.tmpdir()}/astrid-fsprop-`);
    let run = 0;
    const seen = { allowed: 0, denied: 0 };
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(opArb, { minLength: 5, maxLength: 30 }),
          // Requests start from a created node (so most of them exist and many are granted)
          // and add random segments, "..", "." and empty ones on the end.
          fc.array(
            fc.record({
              node: fc.nat(60),
              absolute: fc.boolean(),
              segments: fc.oneof(
                { arbitrary: fc.constant([]), weight: 2 },
                {
                  arbitrary: fc.array(fc.constantFrom(...SEGMENTS), { minLength: 1, maxLength: 3 }),
                  weight: 1,
                },
              ),
            }),
            { minLength: 1, maxLength: 15 },
          ),
          async (ops, requests) => {
            const root = `${fs.realpathSync(parent)}/t${run++}`;
            fs.mkdirSync(root);
            const nodes = buildTree(root, ops);
            const wsDir = `${root}/ws`;
            const inside = inodesInside(wsDir);
            const g = new FsGate({
              read: rules("cwd://a/**", "cwd://b/**", "cwd://**/*.txt"),
              write: [],
              workspace: wsDir,
              home: wsDir,
            });
            for (const req of requests) {
              const node = nodes[req.node % nodes.length]!;
              const start =
                req.absolute || !node.startsWith(wsDir)
                  ? node
                  : node === wsDir
                    ? "."
                    : node.slice(wsDir.length + 1);
              const path = [start, ...req.segments].join("/");
              let expected = false;
              try {
                const st = fs.statSync(path.startsWith("/") ? path : `${wsDir}/${path}`);
                const rel = inside.get(`${st.dev}:${st.ino}`);
                expected =
                  rel !== undefined && (st.isFile() || st.isDirectory()) && oracleMatches(rel);
              } catch {
                expected = false;
              }
              const d = await g.checkRead(path);
              seen[d.allowed ? "allowed" : "denied"]++;
              if (d.allowed !== expected) {
                throw new Error(
                  `${JSON.stringify(path)}: expected ${expected}, got ${JSON.stringify(d)}`,
                );
              }
            }
          },
        ),
        { numRuns: 120 },
      );
      // Both outcomes must occur, or the property would be vacuous.
      expect(seen.allowed).toBeGreaterThan(20);
      expect(seen.denied).toBeGreaterThan(20);
    } finally {
      fs.rmSync(parent, { recursive: true, force: true });
    }
  });
});
