import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type GraphCapsule, GraphError, resolveGraph } from "./graph.js";

type Imports = Record<string, string | { version: string; optional: boolean }>;

/** A capsule from "ns.iface" keyed imports/exports, for readable tests. */
function capsule(
  name: string,
  imports: Imports = {},
  exports: Record<string, string> = {},
): GraphCapsule {
  const nest = <T>(flat: Record<string, T>): Record<string, Record<string, T>> => {
    const out: Record<string, Record<string, T>> = {};
    for (const [key, v] of Object.entries(flat)) {
      const [ns, iface] = key.split(".") as [string, string];
      out[ns] ??= {};
      out[ns][iface] = v;
    }
    return out;
  };
  const imp = Object.fromEntries(
    Object.entries(imports).map(([k, v]) => [
      k,
      typeof v === "string" ? { version: v, optional: false } : v,
    ]),
  );
  return { package: { name, version: "1.0.0" }, imports: nest(imp), exports: nest(exports) };
}

function graphError(f: () => unknown): GraphError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(GraphError);
    return e as GraphError;
  }
  throw new Error("expected a GraphError");
}

describe("resolveGraph", () => {
  it("starts exporters first, ties by name, and reports every binding", () => {
    const plan = resolveGraph([
      capsule("react", { "astrid.llm": "^1.0", "astrid.tool": "^1" }),
      capsule("openai", {}, { "astrid.llm": "1.2.0" }),
      capsule("github", {}, { "astrid.tool": "1.0.0" }),
      capsule("audit", {}, {}),
    ]);
    expect(plan.order).toEqual(["audit", "github", "openai", "react"]);
    expect(plan.bindings).toEqual([
      {
        importer: "react",
        interface: "astrid.llm",
        range: "^1.0",
        exporter: "openai",
        version: "1.2.0",
      },
      {
        importer: "react",
        interface: "astrid.tool",
        range: "^1",
        exporter: "github",
        version: "1.0.0",
      },
    ]);
  });

  it("wires orchestrator → cache → router → provider by bindings alone", () => {
    const capsules = [
      capsule("orchestrator", { "astrid.llm": "^1" }),
      capsule("cache", { "astrid.llm": "^1" }, { "astrid.llm": "1.0.0" }),
      capsule("router", { "astrid.llm": "^1" }, { "astrid.llm": "1.0.0" }),
      capsule("provider", {}, { "astrid.llm": "1.3.0" }),
    ];
    const plan = resolveGraph(capsules, {
      orchestrator: { "astrid.llm": "cache" },
      cache: { "astrid.llm": "router" },
      router: { "astrid.llm": "provider" },
    });
    expect(plan.order).toEqual(["provider", "router", "cache", "orchestrator"]);
    expect(plan.bindings.map((b) => `${b.importer}->${b.exporter}`)).toEqual([
      "cache->router",
      "orchestrator->cache",
      "router->provider",
    ]);
  });

  it("serves a re-exporting capsule from the other exporter without a binding", () => {
    const plan = resolveGraph([
      capsule("cache", { "astrid.llm": "^1" }, { "astrid.llm": "1.0.0" }),
      capsule("provider", {}, { "astrid.llm": "1.0.0" }),
    ]);
    expect(plan.order).toEqual(["provider", "cache"]);
  });

  it("refuses a missing exporter", () => {
    const e = graphError(() => resolveGraph([capsule("react", { "astrid.llm": "^1.0" })]));
    expect(e.kind).toBe("missing-exporter");
    expect(e.message).toBe("react imports astrid.llm ^1.0 but no capsule exports it");
  });

  it("skips an optional import with no exporter", () => {
    const plan = resolveGraph([
      capsule("react", { "astrid.approval": { version: "^1", optional: true } }),
    ]);
    expect(plan).toEqual({ order: ["react"], bindings: [] });
  });

  it("refuses a version mismatch, listing the exporters found", () => {
    const e = graphError(() =>
      resolveGraph([
        capsule("react", { "astrid.llm": "^2.0" }),
        capsule("openai", {}, { "astrid.llm": "1.2.0" }),
        capsule("anthropic", {}, { "astrid.llm": "1.0.0" }),
      ]),
    );
    expect(e.kind).toBe("version-mismatch");
    expect(e.message).toBe(
      "react imports astrid.llm ^2.0 but no exporter satisfies it; found anthropic 1.0.0, openai 1.2.0",
    );
  });

  it("refuses ambiguity and says how to bind", () => {
    const e = graphError(() =>
      resolveGraph([
        capsule("react", { "astrid.llm": "^1.0" }),
        capsule("openai", {}, { "astrid.llm": "1.2.0" }),
        capsule("anthropic", {}, { "astrid.llm": "1.0.0" }),
      ]),
    );
    expect(e.kind).toBe("ambiguous-exporter");
    expect(e.message).toBe(
      'react imports astrid.llm ^1.0 and several capsules export it: anthropic 1.0.0, openai 1.2.0; bind one with bindings["react"]["astrid.llm"] = "<name>"',
    );
  });

  it("resolves ambiguity with a binding", () => {
    const plan = resolveGraph(
      [
        capsule("react", { "astrid.llm": "^1.0" }),
        capsule("openai", {}, { "astrid.llm": "1.2.0" }),
        capsule("anthropic", {}, { "astrid.llm": "1.0.0" }),
      ],
      { react: { "astrid.llm": "openai" } },
    );
    expect(plan.bindings[0]?.exporter).toBe("openai");
    expect(plan.order).toEqual(["anthropic", "openai", "react"]);
  });

  it("refuses bad bindings", () => {
    const capsules = [
      capsule("react", { "astrid.llm": "^1.0" }),
      capsule("openai", {}, { "astrid.llm": "2.0.0" }),
      capsule("legacy", {}, { "astrid.llm": "1.0.0" }),
      capsule("github", {}, { "astrid.tool": "1.0.0" }),
    ];
    expect(resolveGraph(capsules).bindings[0]?.exporter).toBe("legacy");
    const cases: [Record<string, Record<string, string>>, string][] = [
      [
        { react: { "astrid.llm": "ghost" } },
        'binding react → astrid.llm = "ghost": no capsule is named "ghost"',
      ],
      [
        { react: { "astrid.llm": "github" } },
        'binding react → astrid.llm = "github": github does not export astrid.llm',
      ],
      [
        { react: { "astrid.llm": "openai" } },
        'binding react → astrid.llm = "openai": openai exports astrid.llm 2.0.0, which does not satisfy ^1.0',
      ],
      [
        { react: { "astrid.tool": "github" } },
        "binding react → astrid.tool: react does not import astrid.tool",
      ],
      [
        { reactt: { "astrid.llm": "openai" } },
        'bindings name importer "reactt" but no capsule has that name',
      ],
    ];
    for (const [bindings, message] of cases) {
      const e = graphError(() => resolveGraph(capsules, bindings));
      expect(e.kind).toBe("invalid-binding");
      expect(e.message).toBe(message);
    }
  });

  it("names the whole cycle in order", () => {
    const e = graphError(() =>
      resolveGraph([
        capsule("a", { "x.b": "^1" }, { "x.a": "1.0.0" }),
        capsule("b", { "x.c": "^1" }, { "x.b": "1.0.0" }),
        capsule("c", { "x.a": "^1" }, { "x.c": "1.0.0" }),
        capsule("d", { "x.a": "^1" }),
      ]),
    );
    expect(e.kind).toBe("cycle");
    expect(e.message).toBe("dependency cycle: a → b → c → a");
    expect(e.cycle).toEqual(["a", "b", "c", "a"]);
  });

  it("reports importing one's own sole export as a self-cycle", () => {
    const e = graphError(() => resolveGraph([capsule("a", { "x.y": "^1" }, { "x.y": "1.0.0" })]));
    expect(e.message).toBe("dependency cycle: a → a");
    const bound = graphError(() =>
      resolveGraph(
        [capsule("a", { "x.y": "^1" }, { "x.y": "1.0.0" }), capsule("b", {}, { "x.y": "1.0.0" })],
        { a: { "x.y": "a" } },
      ),
    );
    expect(bound.message).toBe("dependency cycle: a → a");
  });

  it("refuses two capsules with one name", () => {
    const e = graphError(() => resolveGraph([capsule("a"), capsule("a")]));
    expect(e.message).toBe('two capsules are named "a"');
  });

  it("accepts parsed manifests directly", async () => {
    const { parseManifest } = await import("./parse.js");
    const m = parseManifest(
      '[package]\nname = "p"\nversion = "1.0.0"\ndescription = "d"\n[imports.astrid]\nllm = { version = "^1", optional = true }\n[static]\n',
    );
    expect(resolveGraph([m]).order).toEqual(["p"]);
  });

  it("property: on random acyclic graphs every importer starts after its exporters", () => {
    // Node i may import only interfaces exported by nodes j < i, so the graph is acyclic;
    // names are shuffled so the order is not simply the generation order.
    const graph = fc.integer({ min: 1, max: 12 }).chain((n) =>
      fc.record({
        names: fc.shuffledSubarray(
          Array.from({ length: 26 }, (_, i) => String.fromCharCode(97 + i)),
          { minLength: n, maxLength: n },
        ),
        edges: fc.array(fc.array(fc.nat({ max: n - 1 }), { maxLength: 4 }), {
          minLength: n,
          maxLength: n,
        }),
      }),
    );
    fc.assert(
      fc.property(graph, ({ names, edges }) => {
        const capsules = names.map((name, i) => {
          const imports: Imports = {};
          for (const j of edges[i] ?? []) {
            if (j < i) imports[`x.i${j}`] = "^1";
          }
          return capsule(name, imports, { [`x.i${i}`]: "1.0.0" });
        });
        const plan = resolveGraph(capsules);
        expect([...plan.order].sort()).toEqual([...names].sort());
        const at = new Map(plan.order.map((n, k) => [n, k]));
        for (const b of plan.bindings) {
          expect(at.get(b.exporter)).toBeLessThan(at.get(b.importer) as number);
        }
        const wanted = capsules.reduce((s, c) => s + Object.keys(c.imports.x ?? {}).length, 0);
        expect(plan.bindings).toHaveLength(wanted);
        // Deterministic: the same input in another order gives the same plan.
        expect(resolveGraph([...capsules].reverse())).toEqual(plan);
      }),
      { numRuns: 300 },
    );
  });
});

describe("collecting interfaces", () => {
  const cap = (name: string, imports: Record<string, string>, exports: Record<string, string>) => ({
    package: { name, version: "1.0.0" },
    imports: {
      astrid: Object.fromEntries(
        Object.entries(imports).map(([k, v]) => [k, { version: v, optional: false }]),
      ),
    },
    exports: { astrid: exports },
  });

  it("binds a tool import to every tool exporter, started before the importer", () => {
    const plan = resolveGraph([
      cap("react", { tool: "^1" }, {}),
      cap("shell", {}, { tool: "1.0.0" }),
      cap("fs", {}, { tool: "1.2.0" }),
    ]);
    expect(plan.order).toEqual(["fs", "shell", "react"]);
    expect(plan.bindings.map((b) => `${b.importer}→${b.exporter}`)).toEqual([
      "react→fs",
      "react→shell",
    ]);
  });

  it("still binds one exporter when a binding names it, and stays ambiguous for other interfaces", () => {
    const caps = [
      cap("react", { tool: "^1", llm: "^1" }, {}),
      cap("a", {}, { tool: "1.0.0", llm: "1.0.0" }),
      cap("b", {}, { tool: "1.0.0", llm: "1.0.0" }),
    ];
    expect(() => resolveGraph(caps)).toThrow(
      /react imports astrid\.llm \^1 and several capsules export it/,
    );
    const plan = resolveGraph(caps, { react: { "astrid.llm": "a", "astrid.tool": "b" } });
    expect(plan.bindings.map((b) => `${b.interface}→${b.exporter}`)).toEqual([
      "astrid.llm→a",
      "astrid.tool→b",
    ]);
  });
});
