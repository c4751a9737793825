import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  assertPattern,
  assertPublishSubject,
  isValidPattern,
  patternCovers,
  SubjectError,
  subjectMatches,
} from "./subject.js";

describe("subject grammar", () => {
  it.each([
    ["", "subject is empty"],
    ["a..b", 'subject "a..b" has an empty token (leading, trailing or double dot)'],
    [".a", 'subject ".a" has an empty token (leading, trailing or double dot)'],
    ["a.", 'subject "a." has an empty token (leading, trailing or double dot)'],
    ["a b", 'subject "a b" contains whitespace or a control character'],
    ["a.*", 'subject "a.*" contains a wildcard; publish to a literal subject'],
    ["a.>", 'subject "a.>" contains a wildcard; publish to a literal subject'],
  ])("refuses publish subject %j", (s, msg) => {
    expect(() => assertPublishSubject(s)).toThrow(new SubjectError(msg));
  });

  it.each([
    ["a.>.b", 'pattern "a.>.b": ">" is only allowed as the last token'],
    ["a.b*", 'pattern "a.b*": wildcard inside token "b*"; "*" and ">" must stand alone'],
    ["a\t.b", 'pattern "a\t.b" contains whitespace or a control character'],
  ])("refuses pattern %j", (p, msg) => {
    expect(() => assertPattern(p)).toThrow(new SubjectError(msg));
  });

  it("refuses a subject over the length limit", () => {
    expect(() => assertPublishSubject("a".repeat(513))).toThrow(/longer than 512/);
  });
});

describe("subjectMatches", () => {
  it.each([
    ["a.b", "a.b", true],
    ["a.b", "a.c", false],
    ["a.*", "a.b", true],
    ["a.*", "a.b.c", false],
    ["a.*", "a", false],
    ["a.>", "a.b", true],
    ["a.>", "a.b.c", true],
    ["a.>", "a", false],
    [">", "a", true],
    [">", "a.b.c", true],
    ["*", "a", true],
    ["*", "a.b", false],
    ["*.b.>", "x.b.y.z", true],
    ["*.b.>", "x.c.y", false],
    ["tool.v1.execute.*", "tool.v1.execute.read_file", true],
  ])("%s ~ %s = %s", (p, s, want) => {
    expect(subjectMatches(p, s)).toBe(want);
  });
});

const token = fc.stringMatching(/^[a-z0-9_-]{1,4}$/);
const subject = fc.array(token, { minLength: 1, maxLength: 5 }).map((t) => t.join("."));
const pattern = fc
  .tuple(fc.array(fc.oneof(token, fc.constant("*")), { minLength: 1, maxLength: 5 }), fc.boolean())
  .map(([toks, tail]) => (tail ? [...toks, ">"] : toks).join("."));

describe("patternCovers", () => {
  it.each([
    ["a.*", "a.b", true],
    ["a.*", "a.*", true],
    ["a.*", "a.>", false],
    ["a.>", "a.*", true],
    ["a.>", "a.b.>", true],
    ["a.b.>", "a.>", false],
    [">", ">", true],
    ["*", ">", false],
    ["a.b", "a.*", false],
  ])("%s covers %s = %s", (o, i, want) => {
    expect(patternCovers(o, i)).toBe(want);
  });

  it("agrees with matching: if outer covers inner, every subject inner matches, outer matches", () => {
    fc.assert(
      fc.property(pattern, pattern, subject, (outer, inner, s) => {
        fc.pre(isValidPattern(outer) && isValidPattern(inner));
        if (patternCovers(outer, inner) && subjectMatches(inner, s)) {
          expect(subjectMatches(outer, s)).toBe(true);
        }
      }),
      { numRuns: 5000 },
    );
  });

  it("every pattern covers itself and every subject it matches", () => {
    fc.assert(
      fc.property(pattern, subject, (p, s) => {
        expect(patternCovers(p, p)).toBe(true);
        if (subjectMatches(p, s)) expect(patternCovers(p, s)).toBe(true);
      }),
    );
  });
});
