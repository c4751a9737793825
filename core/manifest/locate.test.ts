import fc from "fast-check";
import { parse } from "smol-toml";
import { describe, expect, it } from "vitest";
import { indexPositions, type KeyPath, locate, locateKey } from "./locate.js";

describe("locateKey", () => {
  const src = `# comment [not.a.table]
[package]
name = "x"  # trailing
"quoted.key" = 1
a.b = 2

[[handler]]
topic = "a"

[[handler]]
topic = "b"
list = [
  "one", # a comment with ] and ,
  { x = 1, y = [1,
   2] },
  """multi
[fake.table]
line""",
  'last'
]

[handler.sub]
k = 1

[imports.astrid]
llm = { version = "^1", optional = true }
`;

  it.each<[KeyPath, number]>([
    [["package"], 2],
    [["package", "name"], 3],
    [["package", "quoted.key"], 4],
    [["package", "a", "b"], 5],
    [["handler", 0], 7],
    [["handler", 0, "topic"], 8],
    [["handler", 1], 10],
    [["handler", 1, "list", 0], 13],
    [["handler", 1, "list", 1, "y", 1], 15],
    [["handler", 1, "list", 2], 16],
    [["handler", 1, "list", 3], 19],
    [["handler", 1, "sub", "k"], 23],
    [["imports", "astrid", "llm", "optional"], 26],
  ])("finds %j on line %i", (path, line) => {
    expect(locateKey(src, path)).toMatchObject({ line, exact: true });
  });

  it("falls back to the nearest written ancestor, then to line 1", () => {
    expect(locateKey(src, ["package", "description"])).toEqual({
      line: 2,
      column: 1,
      exact: false,
    });
    expect(locateKey(src, ["handler", 1, "list", 7])).toMatchObject({ line: 12, exact: false });
    expect(locateKey(src, ["wasm", "module"])).toEqual({ line: 1, column: 1, exact: false });
  });

  it("reports the column of an inline key", () => {
    expect(locateKey(src, ["imports", "astrid", "llm", "version"])).toMatchObject({
      line: 26,
      column: 9,
    });
  });
});

// ----- property: random documents, every written key found on its line -------------------------

const scalar = fc.constantFrom(
  "1",
  "-3",
  "1.5",
  "true",
  "1979-05-27",
  '"plain"',
  '"with # hash, = and [brackets]"',
  '"escaped \\" quote"',
  "'literal [x] # y'",
  '"""\nmulti\n[fake.table]\nk = 1\n"""',
  "'''\nraw '' not [x]\n'''",
);

type Value =
  | { kind: "scalar"; text: string }
  | { kind: "inline"; entries: [string, string][] }
  | { kind: "array"; multiline: boolean; items: Value[] };

const keyName = fc.constantFrom(
  "k",
  "name",
  "x_y",
  "a-b",
  "v2",
  '"quoted.key"',
  '"sp ace"',
  "'lit'",
);
const unquote = (k: string): string =>
  k.startsWith('"') || k.startsWith("'") ? k.slice(1, -1) : k;

const lineScalar = scalar.filter((t) => !t.includes("\n"));

const inline: fc.Arbitrary<Value> = fc
  .uniqueArray(fc.tuple(keyName, lineScalar), {
    minLength: 1,
    maxLength: 3,
    selector: ([k]) => unquote(k),
  })
  .map((entries) => ({ kind: "inline", entries }));

const value: fc.Arbitrary<Value> = fc.oneof(
  scalar.map((text): Value => ({ kind: "scalar", text })),
  inline,
  fc
    .record({
      multiline: fc.boolean(),
      items: fc.array(
        fc.oneof(
          scalar.map((text): Value => ({ kind: "scalar", text })),
          inline,
        ),
        {
          minLength: 1,
          maxLength: 4,
        },
      ),
    })
    .map((a): Value => ({ kind: "array", ...a })),
);

const keyValues = fc.uniqueArray(fc.tuple(keyName, value), {
  minLength: 1,
  maxLength: 4,
  selector: ([k]) => unquote(k),
});

const doc = fc.record({
  root: fc.option(keyValues, { nil: undefined }),
  tables: fc.uniqueArray(fc.tuple(fc.constantFrom("t1", "t2", "t3.sub", "t4.a.b"), keyValues), {
    maxLength: 3,
    selector: ([n]) => n,
  }),
  arrays: fc.uniqueArray(
    fc.tuple(fc.constantFrom("h1", "h2"), fc.array(keyValues, { minLength: 1, maxLength: 3 })),
    { maxLength: 2, selector: ([n]) => n },
  ),
});

/** Renders a document, recording the line each key path is written on. */
function render(d: {
  root: [string, Value][] | undefined;
  tables: [string, [string, Value][]][];
  arrays: [string, [string, Value][][]][];
}): { text: string; expected: [KeyPath, number][] } {
  const lines: string[] = [];
  const expected: [KeyPath, number][] = [];
  const lineNo = (): number => lines.join("\n").split("\n").length + (lines.length === 0 ? 0 : 1);
  const push = (text: string): void => {
    lines.push(text);
  };
  const scalarOrInline = (v: Value, path: KeyPath, line: number): string => {
    if (v.kind === "scalar") return v.text;
    if (v.kind === "inline") {
      for (const [k] of v.entries) expected.push([[...path, unquote(k)], line]);
      return `{ ${v.entries.map(([k, s]) => `${k} = ${s}`).join(", ")} }`;
    }
    return "[]";
  };
  const writeKeys = (table: KeyPath, kvs: [string, Value][]): void => {
    for (const [k, v] of kvs) {
      const path = [...table, unquote(k)];
      const start = lineNo();
      expected.push([path, start]);
      if (v.kind === "array" && v.multiline) {
        push(`${k} = [ # open`);
        v.items.forEach((item, i) => {
          const at = lineNo();
          expected.push([[...path, i], at]);
          push(`  ${scalarOrInline(item, [...path, i], at)}, # item ${i}`);
        });
        push("]");
      } else if (v.kind === "array") {
        // Single-line array: items of multi-line strings would break the line, so flatten them.
        const items = v.items.map((item, i) => {
          expected.push([[...path, i], start]);
          return item.kind === "scalar" && item.text.includes("\n")
            ? '"flat"'
            : scalarOrInline(item, [...path, i], start);
        });
        push(`${k} = [${items.join(", ")}]`);
      } else {
        push(`${k} = ${scalarOrInline(v, path, start)}`);
      }
    }
  };
  if (d.root) writeKeys([], d.root);
  for (const [name, kvs] of d.tables) {
    push("");
    expected.push([name.split("."), lineNo()]);
    push(`[${name}]`);
    writeKeys(name.split("."), kvs);
  }
  for (const [name, entries] of d.arrays) {
    entries.forEach((kvs, i) => {
      push("");
      expected.push([[name, i], lineNo()]);
      push(`[[${name}]]`);
      writeKeys([name, i], kvs);
    });
  }
  return { text: `${lines.join("\n")}\n`, expected };
}

describe("locateKey property", () => {
  it("finds the line of every key of random valid documents", () => {
    fc.assert(
      fc.property(doc, fc.nat(), (d, pick) => {
        const { text, expected } = render(d);
        // The generator must produce valid TOML, or the property would prove nothing.
        parse(text);
        const positions = indexPositions(text);
        for (const [path, line] of expected) {
          expect(locate(positions, path)).toMatchObject({ line, exact: true });
        }
        const chosen = expected[pick % expected.length];
        if (chosen) expect(locateKey(text, chosen[0]).line).toBe(chosen[1]);
      }),
      { numRuns: 300 },
    );
  });
});

// ----- property: random valid manifests, one entry broken, the error names its line ------------

const CAPS: Record<string, { good: string[]; bad: string }> = {
  fs_read: { good: ['"cwd://src/**"', '"home://.cache/*"', '"/etc/hosts"'], bad: '"cwd://../x"' },
  net: { good: ['"api.example.com"', '"10.0.0.0/8:5432"', '"[::1]:9000"'], bad: '"http//x"' },
  host_process: { good: ['"git status"', '"git log **"'], bad: '"git ** x"' },
  ipc_publish: { good: ['"tool.v1.result.>"', '"a.*.b"'], bad: '"a..b"' },
  kv: { good: ['"cache"', '"state_v2"'], bad: '"Cache"' },
};

const manifestDoc = fc.record({
  caps: fc.uniqueArray(
    fc.record({
      key: fc.constantFrom(...Object.keys(CAPS)),
      multiline: fc.boolean(),
      picks: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
    }),
    { minLength: 1, maxLength: 5, selector: (c) => c.key },
  ),
  envs: fc.uniqueArray(fc.constantFrom("API_KEY", "REGION", "TOKEN"), { maxLength: 3 }),
  padding: fc.array(fc.constantFrom("", "# a comment", "# [not.a.table]"), { maxLength: 2 }),
  capsFirst: fc.boolean(),
  brokenCap: fc.nat(),
  brokenEntry: fc.nat(),
});

describe("manifest error lines property", () => {
  it("a broken capability entry is reported on the line it is written", async () => {
    const { parseManifest } = await import("./parse.js");
    const { ManifestError } = await import("./errors.js");
    fc.assert(
      fc.property(manifestDoc, (d) => {
        const broken = d.caps[d.brokenCap % d.caps.length];
        if (!broken) return;
        const brokenIndex = d.brokenEntry % broken.picks.length;
        const build = (breakIt: boolean): { text: string; line: number } => {
          const lines: string[] = [];
          let line = 0;
          const pkg = ["[package]", 'name = "p"', 'version = "1.0.0"', 'description = "d"', ""];
          const wasm = ["[wasm]", 'module = "m.js"', ""];
          const env = d.envs.flatMap((n) => [
            `[env.${n}]`,
            'type = "string"',
            'description = "x"',
            "",
          ]);
          const caps: string[] = ["[capabilities]"];
          for (const c of d.caps) {
            const pool = CAPS[c.key] as { good: string[]; bad: string };
            const entries = c.picks.map((p, i) =>
              breakIt && c === broken && i === brokenIndex
                ? pool.bad
                : (pool.good[p % pool.good.length] as string),
            );
            if (c.multiline) {
              caps.push(`${c.key} = [`, ...d.padding.map((p) => (p === "" ? "" : `  ${p}`)));
              entries.forEach((e, i) => {
                if (c === broken && i === brokenIndex) line = -(caps.length + 1);
                caps.push(`  ${e},`);
              });
              caps.push("]");
            } else {
              if (c === broken) line = -(caps.length + 1);
              caps.push(`${c.key} = [${entries.join(", ")}]`);
            }
          }
          caps.push("");
          const head = [...pkg, ...d.padding];
          const order = d.capsFirst ? [head, caps, wasm, env] : [head, wasm, env, caps];
          for (const block of order) {
            if (block === caps) line = lines.length - line;
            lines.push(...block);
          }
          return { text: lines.join("\n"), line };
        };
        // The unbroken manifest is valid; the broken one fails at exactly the recorded line.
        parseManifest(build(false).text);
        const { text, line } = build(true);
        let err: unknown;
        try {
          parseManifest(text);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(ManifestError);
        const issues = (err as InstanceType<typeof ManifestError>).issues;
        expect(issues).toHaveLength(1);
        expect(issues[0]?.line).toBe(line);
        expect(issues[0]?.field).toBe(`capabilities.${broken.key}[${brokenIndex}]`);
      }),
      { numRuns: 200 },
    );
  });
});
