import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CanonicalJsonError, canonicalHash, canonicalJson } from "./canonical-json.js";

describe("canonicalJson", () => {
  it("sorts keys at every depth and drops whitespace", () => {
    expect(canonicalJson({ b: [3, { z: 1, a: "x y" }], a: null, é: true, A: 1.5 })).toBe(
      '{"A":1.5,"a":null,"b":[3,{"a":"x y","z":1}],"é":true}',
    );
  });

  it("gives equal objects equal hashes whatever the key order", () => {
    expect(canonicalHash({ path: "/a", mode: 1 })).toBe(canonicalHash({ mode: 1, path: "/a" }));
    expect(canonicalHash({})).toBe(
      "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    );
  });

  it("leaves out undefined properties, as the wire does", () => {
    expect(canonicalJson({ a: undefined, b: 1 })).toBe('{"b":1}');
  });

  it.each([
    [{ a: Number.NaN }, "canonical JSON cannot encode NaN at $.a"],
    [{ a: [1, Number.POSITIVE_INFINITY] }, "canonical JSON cannot encode Infinity at $.a[1]"],
    [{ a: 1n }, "canonical JSON cannot encode a bigint at $.a"],
    [[undefined], "canonical JSON cannot encode undefined at $[0]"],
    [{ when: new Date(0) }, "canonical JSON cannot encode a Date at $.when; pass plain objects"],
    [{ f: () => 1 }, "canonical JSON cannot encode a function at $.f"],
  ])("refuses %s", (value, msg) => {
    expect(() => canonicalJson(value)).toThrow(new CanonicalJsonError(msg));
  });

  it("refuses cycles", () => {
    const a: Record<string, unknown> = {};
    a.self = a;
    expect(() => canonicalJson(a)).toThrow("canonical JSON cannot encode a cycle at $.self");
  });

  it("round-trips through JSON.parse to an equal value (property)", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const text = canonicalJson(v);
        expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(v)));
        expect(canonicalJson(JSON.parse(text))).toBe(text);
      }),
    );
  });
});

describe("canonicalJson ordering and sharing", () => {
  it("orders keys by UTF-16 code units, as RFC 8785 does", () => {
    // "\u{1F600}" is a surrogate pair (0xD83D…) and sorts before "\uFFFD" by code units.
    expect(canonicalJson({ "\uFFFD": 1, "\u{1F600}": 2, é: 3, z: 4, Z: 5 })).toBe(
      '{"Z":5,"z":4,"é":3,"😀":2,"�":1}',
    );
  });

  it("writes numbers as ECMAScript does", () => {
    expect(canonicalJson([1e21, 0.1, -0, 5e-7])).toBe("[1e+21,0.1,0,5e-7]");
  });

  it("accepts the same object twice when it is not a cycle, and refuses a cycle", () => {
    const shared = { k: 1 };
    expect(canonicalJson([shared, shared])).toBe('[{"k":1},{"k":1}]');
    const a: Record<string, unknown> = {};
    a.self = { back: a };
    expect(() => canonicalJson(a)).toThrow("canonical JSON cannot encode a cycle at $.self.back");
  });
});
