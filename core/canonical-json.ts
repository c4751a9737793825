/**
 * Canonical JSON, shared by approvals (args hashes) and the audit chain (entry hashes): object
 * keys sorted by UTF-16 code units (as RFC 8785 JCS does), no whitespace, numbers as JavaScript prints them. Two equal argument objects always give the
 * same bytes, so their sha256 can bind an approval or an audit entry to exactly the arguments a
 * person saw — `{"a":1,"b":2}` and `{"b":2,"a":1}` must not be two different approvals, and a
 * value JSON cannot carry (NaN, bigint, a Date's hidden fields) must not quietly hash to "null".
 *
 * Like JSON.stringify, an object property whose value is undefined is left out (it is absent on
 * the wire too). Anything JSON cannot represent is refused with the path where it was found.
 */
import { createHash } from "node:crypto";

export class CanonicalJsonError extends Error {
  override readonly name = "CanonicalJsonError";
}

export function canonicalJson(value: unknown): string {
  return encode(value, "$", new Set());
}

/** sha256 (hex) of the canonical JSON of `value`. */
export function canonicalHash(value: unknown): string {
  return createHash("sha256").update(canonicalJson(value), "utf8").digest("hex");
}

function encode(value: unknown, at: string, seen: Set<object>): string {
  switch (typeof value) {
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) {
        throw new CanonicalJsonError(`canonical JSON cannot encode ${value} at ${at}`);
      }
      return JSON.stringify(value);
    case "object":
      break;
    default:
      throw new CanonicalJsonError(
        `canonical JSON cannot encode ${value === undefined ? "undefined" : `a ${typeof value}`} at ${at}`,
      );
  }
  if (value === null) return "null";
  if (seen.has(value))
    throw new CanonicalJsonError(`canonical JSON cannot encode a cycle at ${at}`);
  seen.add(value);
  try {
    if (Array.isArray(value)) {
      return `[${value.map((v, i) => encode(v, `${at}[${i}]`, seen)).join(",")}]`;
    }
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      const name = (value as object).constructor?.name ?? "object";
      throw new CanonicalJsonError(
        `canonical JSON cannot encode a ${name} at ${at}; pass plain objects`,
      );
    }
    const parts: string[] = [];
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v === undefined) continue;
      parts.push(`${JSON.stringify(key)}:${encode(v, `${at}.${key}`, seen)}`);
    }
    return `{${parts.join(",")}}`;
  } finally {
    seen.delete(value);
  }
}
