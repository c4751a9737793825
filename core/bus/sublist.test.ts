import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SubjectError, subjectMatches } from "./subject.js";
import { type Indexed, Sublist } from "./sublist.js";

const sub = (pattern: string, queue?: string): Indexed => ({ pattern, queue });

describe("Sublist", () => {
  it("groups queue subscribers by queue name and lists plain subscribers apart", () => {
    const list = new Sublist<Indexed>();
    const a = sub("a.b");
    const q1 = sub("a.*", "q");
    const q2 = sub("a.>", "q");
    const r1 = sub(">", "r");
    for (const s of [a, q1, q2, r1]) list.insert(s);
    const m = list.match("a.b");
    expect(m.plain).toEqual([a]);
    expect(m.groups).toEqual([[r1], [q2, q1]]);
    expect(list.size).toBe(4);
  });

  it("forgets removed subscriptions, including cached matches", () => {
    const list = new Sublist<Indexed>();
    const a = sub("a.*");
    list.insert(a);
    expect(list.match("a.b").plain).toEqual([a]);
    expect(list.remove(a)).toBe(true);
    expect(list.remove(a)).toBe(false);
    expect(list.match("a.b").plain).toEqual([]);
    expect(list.size).toBe(0);
    expect(list.all()).toEqual([]);
  });

  it("refuses to match a subject that is not literal", () => {
    const list = new Sublist<Indexed>();
    expect(() => list.match("a.*")).toThrow(
      new SubjectError('subject "a.*" contains a wildcard; publish to a literal subject'),
    );
  });

  it("matches exactly what subjectMatches says, for any patterns and subject", () => {
    const token = fc.constantFrom("a", "b", "c");
    const patToken = fc.constantFrom("a", "b", "*");
    const pattern = fc
      .tuple(fc.array(patToken, { minLength: 1, maxLength: 3 }), fc.boolean())
      .map(([ts, tail]) => [...ts, ...(tail ? [">"] : [])].join("."));
    const subject = fc.array(token, { minLength: 1, maxLength: 4 }).map((ts) => ts.join("."));
    fc.assert(
      fc.property(fc.uniqueArray(pattern, { maxLength: 8 }), subject, (patterns, s) => {
        const list = new Sublist<Indexed>();
        const subs = patterns.map((p) => sub(p));
        for (const x of subs) list.insert(x);
        const got = new Set(list.match(s).plain);
        for (const x of subs) expect(got.has(x)).toBe(subjectMatches(x.pattern, s));
        // Removing everything leaves an empty trie (no node leak from churn).
        for (const x of subs) list.remove(x);
        expect(list.all()).toEqual([]);
        expect(list.nodeCount()).toBe(0);
      }),
    );
  });
});
