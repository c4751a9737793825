import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalJson } from "../canonical-json.js";
import {
  AUDIT_DECISIONS,
  AUDIT_LAYERS,
  computeEntryHash,
  entryHashPayload,
  type HashedFields,
  hashArgs,
  parseEntryInput,
} from "./entry.js";
import { AuditInputError } from "./errors.js";
import { decision } from "./test-fixtures.js";

const hex64 = fc.stringMatching(/^[0-9a-f]{64}$/);
const hashedFields: fc.Arbitrary<HashedFields> = fc.record({
  seq: fc.nat(),
  time: fc.constant("2026-01-31T12:00:00.000Z"),
  session: fc.string(),
  principal: fc.string({ minLength: 1 }),
  capsule: fc.string(),
  layer: fc.constantFrom(...AUDIT_LAYERS),
  action: fc.constantFrom("fs.read", "tool.call", "ipc.publish"),
  target: fc.string({ unit: "grapheme" }),
  decision: fc.constantFrom(...AUDIT_DECISIONS),
  reason: fc.string({ unit: "grapheme" }),
  argsHash: fc.option(hex64, { nil: null }),
  prev: hex64,
});

describe("entry hash", () => {
  it("hashes exactly the canonical JSON of the twelve hashed fields", () => {
    fc.assert(
      fc.property(hashedFields, (f) => {
        expect(entryHashPayload(f)).toBe(canonicalJson(f));
      }),
    );
  });

  it("changes when any hashed field changes", () => {
    const base: HashedFields = {
      seq: 7,
      time: "2026-01-31T12:00:00.000Z",
      session: "s",
      principal: "p",
      capsule: "c",
      layer: "gate",
      action: "fs.read",
      target: "/w/a",
      decision: "allow",
      reason: "r",
      argsHash: null,
      prev: "0".repeat(64),
    };
    const h = computeEntryHash(base);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(computeEntryHash({ ...base, decision: "deny" })).not.toBe(h);
    expect(computeEntryHash({ ...base, seq: 8 })).not.toBe(h);
    expect(computeEntryHash({ ...base, argsHash: "1".repeat(64) })).not.toBe(h);
  });

  it("hashes args by their canonical JSON, so key order does not matter", () => {
    expect(hashArgs({ a: 1, b: [2] })).toBe(hashArgs({ b: [2], a: 1 }));
    expect(hashArgs({ a: 1 })).toBe(
      "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862",
    );
  });
});

describe("parseEntryInput", () => {
  it("accepts a decision", () => {
    expect(parseEntryInput(decision(1)).action).toBe("fs.read");
  });

  it("names every bad field with what was expected", () => {
    const bad = { ...decision(1), layer: "kernel", action: "Read File", principal: "" };
    expect(() => parseEntryInput(bad)).toThrow(
      new AuditInputError(
        'invalid audit entry: principal: expected a non-empty string; layer: Invalid option: expected one of "sandbox"|"gate"|"acl"|"token"|"budget"|"approval"|"lifecycle"; action: expected dotted lowercase words, e.g. "fs.read" or "tool.call"',
      ),
    );
  });

  it("refuses fields the schema does not know (they would be logged unhashed)", () => {
    expect(() => parseEntryInput({ ...decision(1), seq: 5 })).toThrow(
      'invalid audit entry: (record): Unrecognized key: "seq"',
    );
  });
});
