/**
 * Turns zod's JSON Schema (draft 2020-12) into the structural subset a Kubernetes CRD
 * accepts. Anything without a known translation is an error here rather than a CRD the API
 * server rejects at install time — or, worse, accepts with a check silently dropped.
 */
import { z } from "zod";

export type JsonSchema = { [key: string]: unknown };

export class StructuralSchemaError extends Error {
  override readonly name = "StructuralSchemaError";
}

// Keys the API server understands in a structural schema (plus x-kubernetes-*).
const ALLOWED = new Set([
  "type",
  "description",
  "properties",
  "required",
  "items",
  "additionalProperties",
  "enum",
  "default",
  "format",
  "pattern",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "minLength",
  "maxLength",
  "minItems",
  "maxItems",
  "minProperties",
  "maxProperties",
  "uniqueItems",
]);

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

function isIntOrString(anyOf: unknown): boolean {
  if (!Array.isArray(anyOf) || anyOf.length !== 2) return false;
  const types = anyOf.map((s) => (s as JsonSchema).type).sort();
  return types[0] === "integer" && types[1] === "string";
}

function convert(node: JsonSchema, at: string): JsonSchema {
  if (node.anyOf !== undefined) {
    if (!isIntOrString(node.anyOf)) {
      throw new StructuralSchemaError(`${at}: anyOf other than integer|string has no CRD form`);
    }
    const out: JsonSchema = { "x-kubernetes-int-or-string": true };
    if (typeof node.description === "string") out.description = node.description;
    return out;
  }
  if (Array.isArray(node.type)) {
    // zod writes unions of plain types (and nullable) as a type list; a CRD has one type.
    throw new StructuralSchemaError(
      `${at}: a type list ${JSON.stringify(node.type)} has no CRD form`,
    );
  }
  const out: JsonSchema = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === "$schema" || key === "propertyNames") continue; // map keys are strings anyway
    if (key === "const") {
      out.enum = [value];
      continue;
    }
    if (key === "additionalProperties") {
      // `false` is zod's strictObject; a CRD may not say it, and the API server prunes and
      // (with fieldValidation=Strict) rejects unknown fields on its own.
      if (value === false) continue;
      if (typeof value !== "object" || value === null) {
        throw new StructuralSchemaError(`${at}: additionalProperties must be a schema`);
      }
      out.additionalProperties = convert(value as JsonSchema, `${at}.*`);
      continue;
    }
    if (key === "properties") {
      const props: JsonSchema = {};
      for (const [name, child] of Object.entries(value as JsonSchema)) {
        props[name] = convert(child as JsonSchema, `${at}.${name}`);
      }
      out.properties = props;
      continue;
    }
    if (key === "items") {
      out.items = convert(value as JsonSchema, `${at}[]`);
      continue;
    }
    if (key.startsWith("x-kubernetes-") || key === "x-astrid-pattern-message") {
      out[key] = value;
      continue;
    }
    if (!ALLOWED.has(key)) {
      throw new StructuralSchemaError(`${at}: JSON Schema keyword "${key}" has no CRD form`);
    }
    out[key] = value;
  }
  if (out.type === undefined && out["x-kubernetes-int-or-string"] !== true) {
    throw new StructuralSchemaError(`${at}: a structural schema needs a type`);
  }
  if (out.type === "integer" && out.minimum === -MAX_SAFE && out.maximum === MAX_SAFE) {
    // zod's default int() bounds, not a limit anyone chose: int64 says it better.
    delete out.minimum;
    delete out.maximum;
  }
  if (out.type === "integer") out.format = "int64";
  if (out.format === "date-time") delete out.pattern; // the server checks RFC 3339 itself
  const patternMessage = out["x-astrid-pattern-message"];
  if (patternMessage !== undefined) {
    delete out["x-astrid-pattern-message"];
    if (typeof out.pattern !== "string" || out.pattern.includes("'")) {
      throw new StructuralSchemaError(`${at}: a readable pattern needs a regex without quotes`);
    }
    // A raw CEL string keeps the regex's backslashes as written; RE2 reads the same syntax.
    const rule = { rule: `self.matches(r'${out.pattern}')`, message: String(patternMessage) };
    out["x-kubernetes-validations"] = [
      ...((out["x-kubernetes-validations"] as unknown[] | undefined) ?? []),
      rule,
    ];
    delete out.pattern;
  }
  return out;
}

/** The CRD form of a zod schema, read as input (defaults make fields optional). */
export function structuralSchema(schema: z.ZodType): JsonSchema {
  return convert(z.toJSONSchema(schema, { io: "input" }) as JsonSchema, "");
}
