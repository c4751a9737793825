import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { readablePattern } from "./common.js";
import { CRD_FILES, crdFor, crdYaml, KINDS, openApiSchemaFor } from "./crd.js";
import { crdReference } from "./reference.js";
import { type JsonSchema, StructuralSchemaError, structuralSchema } from "./structural.js";

const repo = (p: string) => new URL(`../../${p}`, import.meta.url);

/** Every node of a schema with its path. */
function* nodes(s: JsonSchema, at = ""): Generator<[string, JsonSchema]> {
  yield [at, s];
  for (const [k, v] of Object.entries((s.properties as Record<string, JsonSchema>) ?? {})) {
    yield* nodes(v, `${at}.${k}`);
  }
  if (s.items) yield* nodes(s.items as JsonSchema, `${at}[]`);
  if (typeof s.additionalProperties === "object") {
    yield* nodes(s.additionalProperties as JsonSchema, `${at}.*`);
  }
}

describe("committed artefacts", () => {
  it.each(KINDS)("%s: crds/ holds exactly what the generator writes", (kind) => {
    expect(readFileSync(repo(CRD_FILES[kind]), "utf8")).toBe(crdYaml(kind));
  });

  it("docs/crds.md is up to date (npx tsx scripts/gen-crds.ts)", () => {
    expect(readFileSync(repo("docs/crds.md"), "utf8")).toBe(crdReference());
  });
});

describe("crdFor", () => {
  it.each(KINDS)("%s: every node is structural (a type, no JSON Schema extras)", (kind) => {
    for (const [at, node] of nodes(openApiSchemaFor(kind))) {
      const typed = typeof node.type === "string" || node["x-kubernetes-int-or-string"] === true;
      expect(typed, `${at} has no type`).toBe(true);
      for (const banned of ["$schema", "anyOf", "oneOf", "allOf", "const", "propertyNames"]) {
        expect(node[banned], `${at} has ${banned}`).toBeUndefined();
      }
      expect(node.additionalProperties, `${at} says additionalProperties: false`).not.toBe(false);
    }
  });

  it("names, scope, categories and subresources", () => {
    const crd = crdFor("Capsule") as {
      metadata: { name: string };
      spec: {
        scope: string;
        names: Record<string, unknown>;
        versions: { name: string; subresources: unknown }[];
      };
    };
    expect(crd.metadata.name).toBe("capsules.astrid.dev");
    expect(crd.spec.scope).toBe("Namespaced");
    expect(crd.spec.names).toEqual({
      kind: "Capsule",
      listKind: "CapsuleList",
      plural: "capsules",
      singular: "capsule",
      shortNames: ["cap"],
      categories: ["astrid"],
    });
    expect(crd.spec.versions[0]?.name).toBe("v1alpha1");
    expect(crd.spec.versions[0]?.subresources).toEqual({
      status: {},
      scale: { specReplicasPath: ".spec.replicas", statusReplicasPath: ".status.replicas" },
    });
    const shortNames = KINDS.map(
      (k) => (crdFor(k) as { spec: { names: { shortNames: string[] } } }).spec.names.shortNames,
    );
    expect(shortNames).toEqual([["cap"], ["as"], ["apr"]]);
  });

  it("keeps defaults, bounds, int-or-string quantities and int64 integers", () => {
    const spec = (openApiSchemaFor("Capsule").properties as Record<string, JsonSchema>)
      .spec as JsonSchema;
    const props = spec.properties as Record<string, JsonSchema>;
    expect(props.replicas).toEqual({
      type: "integer",
      format: "int64",
      default: 1,
      minimum: 0,
      maximum: 100,
      description: "Pods running this capsule",
    });
    const resources = props.resources as JsonSchema;
    const limits = (resources.properties as Record<string, JsonSchema>).limits;
    expect(limits?.additionalProperties).toEqual({ "x-kubernetes-int-or-string": true });
    expect(spec.required).toEqual(["manifest", "package"]);
  });
});

describe("structuralSchema", () => {
  it("turns a readable pattern into a CEL rule with its message", () => {
    const s = z.string().max(8).regex(/^\d+$/).meta(readablePattern("digits only"));
    expect(structuralSchema(s)).toEqual({
      type: "string",
      maxLength: 8,
      "x-kubernetes-validations": [{ rule: "self.matches(r'^\\d+$')", message: "digits only" }],
    });
  });

  it("refuses a readable pattern it cannot quote", () => {
    const s = z.string().regex(/^'$/).meta(readablePattern("a quote"));
    expect(() => structuralSchema(s)).toThrow(
      new StructuralSchemaError(": a readable pattern needs a regex without quotes"),
    );
  });
});

describe("structuralSchema refuses what a CRD cannot say", () => {
  it("a union other than integer|string, and nullable", () => {
    expect(() => structuralSchema(z.object({ x: z.union([z.string(), z.boolean()]) }))).toThrow(
      new StructuralSchemaError('.x: a type list ["string","boolean"] has no CRD form'),
    );
    expect(() => structuralSchema(z.object({ n: z.string().nullable() }))).toThrow(
      new StructuralSchemaError('.n: a type list ["string","null"] has no CRD form'),
    );
    const objects = z.union([z.object({ a: z.string() }), z.object({ b: z.string() })]);
    expect(() => structuralSchema(z.object({ u: objects }))).toThrow(
      new StructuralSchemaError(".u: anyOf other than integer|string has no CRD form"),
    );
  });

  it("a JSON Schema keyword with no structural form", () => {
    expect(() => structuralSchema(z.object({ t: z.tuple([z.string()]) }))).toThrow(
      new StructuralSchemaError('.t: JSON Schema keyword "prefixItems" has no CRD form'),
    );
  });
});
