import * as fs from "node:fs";
import * as os from "node:os";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseProcessRule } from "../../manifest/capability-rules.js";
import { DEFAULT_TRUSTED_PATH, ProcessGate } from "./process.js";

const gateOf = (...entries: string[]) => new ProcessGate(entries.map(parseProcessRule));
const gate = gateOf("git status", "git log **", "git show *", "/usr/bin/env", "ls * *");

describe("ProcessGate.checkSpawn", () => {
  const allows: [string, string[], string][] = [
    ["git", ["status"], "git status"],
    ["git", ["log"], "git log **"],
    ["git", ["log", "--oneline", "-n", "5"], "git log **"],
    ["git", ["show", "HEAD"], "git show *"],
    ["git", ["show", "--output=/tmp/x"], "git show *"],
    ["/usr/bin/env", [], "/usr/bin/env"],
    ["ls", ["-la", "src"], "ls * *"],
  ];
  it.each(allows)("allows %s %j", (command, args, rule) => {
    expect(gate.checkSpawn(command, args)).toEqual({ allowed: true, layer: "gate", rule });
  });

  const denies: [string, string, string[], string][] = [
    [
      "an extra argument",
      "git",
      ["status", "--porcelain"],
      `git ["status","--porcelain"] matches no host_process rule for "git" (rules: "git status", "git log **", "git show *")`,
    ],
    [
      "a missing argument",
      "git",
      ["show"],
      `git ["show"] matches no host_process rule for "git" (rules: "git status", "git log **", "git show *")`,
    ],
    [
      "two for one *",
      "git",
      ["show", "a", "b"],
      `git ["show","a","b"] matches no host_process rule for "git" (rules: "git status", "git log **", "git show *")`,
    ],
    ["an unlisted command", "rm", ["-rf", "/"], `command "rm" matches no host_process rule`],
    [
      "an absolute path for a bare rule",
      "/usr/bin/git",
      ["status"],
      `command "/usr/bin/git" matches no host_process rule`,
    ],
    ["a bare name for an absolute rule", "env", [], `command "env" matches no host_process rule`],
    [
      "a relative path",
      "./git",
      ["status"],
      `command "./git" is a relative path; it would resolve against the spawn directory`,
    ],
    [
      "a path with a directory",
      "bin/git",
      ["status"],
      `command "bin/git" is a relative path; it would resolve against the spawn directory`,
    ],
    [
      "a dotted absolute path",
      "/usr/bin/../bin/env",
      [],
      `command "/usr/bin/../bin/env" matches no host_process rule`,
    ],
    ["NUL in the command", "git\u0000x", ["status"], `command "git\\u0000x" contains a NUL byte`],
    [
      "NUL in an argument",
      "git",
      ["show", "HEAD\u0000--output=x"],
      `argument 1 "HEAD\\u0000--output=x" contains a NUL byte`,
    ],
    [
      "a shell string",
      "git status; rm -rf /",
      [],
      `command "git status; rm -rf /" is a relative path; it would resolve against the spawn directory`,
    ],
    [
      "a shell string without slash",
      "git status && id",
      [],
      `command "git status && id" matches no host_process rule`,
    ],
    ["an empty command", "", [], "expected a non-empty command"],
  ];
  it.each(denies)("denies %s", (_name, command, args, reason) => {
    expect(gate.checkSpawn(command, args)).toEqual({ allowed: false, layer: "gate", reason });
  });

  it("denies everything without rules", () => {
    expect(new ProcessGate([]).checkSpawn("ls", [])).toEqual({
      allowed: false,
      layer: "gate",
      reason: `command "ls" matches no host_process rule`,
    });
  });
});

// Property: argument patterns against an independent oracle — the patterns compiled to a
// regular expression over the arguments joined with a separator no argument contains.
const SEP = "\u0001";
const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const token = fc.constantFrom("a", "b", "-n", "--x=1", "HEAD", "*", "**");
const arg = fc.oneof(
  fc.constantFrom("a", "b", "-n", "--x=1", "HEAD", "*", "**", "", "a b"),
  fc.string({ maxLength: 4 }),
);

describe("ProcessGate property: argument patterns", () => {
  it("matches exactly what the regex oracle matches", () => {
    fc.assert(
      fc.property(
        fc.array(token, { maxLength: 5 }),
        fc.array(arg, { maxLength: 6 }),
        (tokens, args) => {
          // "**" is only valid last; the parser would refuse other placements.
          const cleaned = tokens.filter((t, i) => t !== "**" || i === tokens.length - 1);
          const source = ["tool", ...cleaned].join(" ");
          const g = gateOf(source);
          const pattern = cleaned
            .map((t) =>
              t === "*"
                ? `${SEP}[^${SEP}]*`
                : t === "**"
                  ? `(${SEP}[^${SEP}]*)*`
                  : `${SEP}${escapeRegex(t)}`,
            )
            .join("");
          const clean = args.every((a) => !a.includes(SEP) && !a.includes("\u0000"));
          const expected =
            clean && new RegExp(`^${pattern}$`).test(args.map((a) => SEP + a).join(""));
          const d = g.checkSpawn("tool", args);
          if (args.some((a) => a.includes("\u0000"))) expect(d.allowed).toBe(false);
          else if (clean) expect(d.allowed).toBe(expected);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("ProcessGate.resolveExecutable", () => {
  let base: string;
  let ws: string;
  let bin: string;

  beforeAll(() => {
    base = fs.realpathSync(fs.mkdtempSync(`${os.tmpdir()}/astrid-procgate-`));
    ws = `${base}/ws`;
    bin = `${base}/bin`;
    fs.mkdirSync(ws);
    fs.mkdirSync(bin);
    fs.writeFileSync(`${ws}/evil`, "#!/bin/sh\n", { mode: 0o755 });
    fs.symlinkSync(`${ws}/evil`, `${bin}/git`);
    fs.writeFileSync(`${bin}/plain`, "data", { mode: 0o644 });
    fs.writeFileSync(`${bin}/tool`, "#!/bin/sh\n", { mode: 0o755 });
  });
  afterAll(() => fs.rmSync(base, { recursive: true, force: true }));

  it("defaults to a fixed PATH and finds sh there", async () => {
    const g = new ProcessGate([]);
    expect(g.trustedPath()).toEqual(DEFAULT_TRUSTED_PATH);
    const r = await g.resolveExecutable("sh");
    expect(["/usr/local/bin/sh", "/usr/bin/sh", "/bin/sh"]).toContain(r.path);
    expect(r.decision).toEqual({ allowed: true, layer: "gate", rule: `trusted PATH "${r.path}"` });
    expect(fs.realpathSync(r.path ?? "")).toBe(r.realpath);
  });

  it("refuses a trusted-PATH entry that links into the workspace", async () => {
    const g = new ProcessGate([], { trustedPath: [bin, "/usr/bin"], workspace: ws });
    expect((await g.resolveExecutable("git")).decision).toEqual({
      allowed: false,
      layer: "gate",
      reason: `"${bin}/git" resolves to "${ws}/evil", inside the workspace`,
    });
  });

  const refusals: [string, string, () => string][] = [
    ["a non-executable file", "plain", () => `"${base}/bin/plain" is not executable`],
    [
      "a missing command",
      "nope",
      () => `command "nope" was not found on the trusted PATH (${base}/bin)`,
    ],
    ["a relative path", "./tool", () => `command "./tool" is a relative path`],
  ];
  it.each(refusals)("refuses %s", async (_name, command, reason) => {
    const g = new ProcessGate([], { trustedPath: [bin], workspace: ws });
    expect((await g.resolveExecutable(command)).decision).toEqual({
      allowed: false,
      layer: "gate",
      reason: reason(),
    });
  });

  it("resolves an executable on the given PATH", async () => {
    const g = new ProcessGate([], { trustedPath: [bin], workspace: ws });
    expect(await g.resolveExecutable("tool")).toEqual({
      decision: { allowed: true, layer: "gate", rule: `trusted PATH "${bin}/tool"` },
      path: `${bin}/tool`,
      realpath: `${bin}/tool`,
    });
  });

  it("refuses a trusted PATH inside the workspace or relative", () => {
    expect(() => new ProcessGate([], { trustedPath: [`${ws}/bin`], workspace: ws })).toThrow(
      `trusted PATH entry "${ws}/bin" is inside the workspace "${ws}"`,
    );
    expect(() => new ProcessGate([], { trustedPath: ["bin"] })).toThrow(
      `trusted PATH entry "bin" must be an absolute path without "." or ".."`,
    );
  });
});
