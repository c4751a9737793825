import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { subjectMatches } from "../../bus/subject.js";
import { IpcAcl } from "./ipc-acl.js";

const acl = (publish: string[], subscribe: string[]) =>
  new IpcAcl({ publish, subscribe }, { capsuleId: "fs-tool" });

describe("IpcAcl.checkPublish", () => {
  const a = acl(["tool.v1.result.fs", "audit.v1.*"], ["tool.v1.execute.fs"]);

  it("allows a subject matched by a publish pattern and names the pattern", () => {
    expect(a.checkPublish("audit.v1.entry")).toEqual({
      allowed: true,
      layer: "acl",
      rule: 'ipc_publish "audit.v1.*"',
    });
  });

  it("denies a subject no pattern matches, listing the patterns", () => {
    expect(a.checkPublish("audit.v1.entry.extra")).toEqual({
      allowed: false,
      layer: "acl",
      reason:
        'publish to "audit.v1.entry.extra" is not allowed by ipc_publish [tool.v1.result.fs, audit.v1.*]',
    });
  });

  it("refuses wildcards and malformed subjects in a publish", () => {
    expect(a.checkPublish("audit.v1.*")).toMatchObject({
      allowed: false,
      reason:
        'publish refused: subject "audit.v1.*" contains a wildcard; publish to a literal subject',
    });
    expect(a.checkPublish("audit..v1")).toMatchObject({
      allowed: false,
      reason:
        'publish refused: subject "audit..v1" has an empty token (leading, trailing or double dot)',
    });
  });

  it("returns the same decision from the cache, also after the cache was cleared", () => {
    const small = new IpcAcl({ publish: ["a.*"], subscribe: [] }, { capsuleId: "c", cacheSize: 2 });
    const first = small.checkPublish("a.b");
    expect(small.checkPublish("a.b")).toBe(first);
    small.checkPublish("a.c");
    small.checkPublish("a.d"); // clears
    expect(small.checkPublish("a.b")).toEqual(first);
    expect(small.checkPublish("b.b").allowed).toBe(false);
  });

  it("allows answering a received request on its inbox reply subject", () => {
    expect(
      a.checkPublish("_INBOX.orchestrator.abc.1", { inReplyTo: "_INBOX.orchestrator.abc.1" }),
    ).toEqual({ allowed: true, layer: "acl", rule: "reply to a received request" });
  });

  it("does not let the reply context widen publish to another subject", () => {
    expect(
      a.checkPublish("_INBOX.other.x", { inReplyTo: "_INBOX.orchestrator.abc.1" }).allowed,
    ).toBe(false);
  });

  it("refuses a reply subject outside _INBOX (a requester steering the responder)", () => {
    expect(a.checkPublish("tool.v1.execute.shell", { inReplyTo: "tool.v1.execute.shell" })).toEqual(
      {
        allowed: false,
        layer: "acl",
        reason:
          'reply to "tool.v1.execute.shell" refused: reply subjects must start with "_INBOX."',
      },
    );
  });

  it("refuses replies from a capsule that subscribes to nothing", () => {
    const p = acl(["a.b"], []);
    expect(p.checkPublish("_INBOX.x.1", { inReplyTo: "_INBOX.x.1" })).toMatchObject({
      allowed: false,
      reason: 'reply to "_INBOX.x.1" refused: the capsule subscribes to nothing',
    });
  });
});

describe("IpcAcl.checkSubscribe", () => {
  const a = acl(["tool.v1.result.fs"], ["tool.v1.execute.fs", "session.v1.*"]);

  it("allows a pattern covered by an allowed one", () => {
    expect(a.checkSubscribe("tool.v1.execute.fs")).toMatchObject({ allowed: true });
    expect(a.checkSubscribe("session.v1.*")).toMatchObject({ allowed: true });
    expect(a.checkSubscribe("session.v1.prompt")).toMatchObject({
      allowed: true,
      rule: 'ipc_subscribe "session.v1.*"',
    });
  });

  it("denies a wider pattern that merely overlaps an allowed one", () => {
    expect(a.checkSubscribe("tool.v1.execute.*")).toEqual({
      allowed: false,
      layer: "acl",
      reason:
        'subscribe to "tool.v1.execute.*" is not covered by ipc_subscribe [tool.v1.execute.fs, session.v1.*]',
    });
    expect(a.checkSubscribe(">").allowed).toBe(false);
    expect(a.checkSubscribe("session.v1.>").allowed).toBe(false);
  });

  it("allows the capsule's own inbox but not the inbox root nor another capsule's", () => {
    expect(a.inboxPrefix).toBe("_INBOX.fs-tool");
    expect(a.checkSubscribe("_INBOX.fs-tool.abc.*")).toMatchObject({
      allowed: true,
      rule: 'own inbox "_INBOX.fs-tool.>"',
    });
    expect(a.checkSubscribe("_INBOX.>").allowed).toBe(false);
    expect(a.checkSubscribe("_INBOX.*.abc").allowed).toBe(false);
    expect(a.checkSubscribe("_INBOX.orchestrator.>").allowed).toBe(false);
  });

  it("refuses malformed patterns with the grammar's message", () => {
    expect(a.checkSubscribe("session.>.x")).toMatchObject({
      allowed: false,
      reason: 'subscribe refused: pattern "session.>.x": ">" is only allowed as the last token',
    });
  });
});

describe("IpcAcl construction", () => {
  it("denies everything, inbox included, when both lists are empty", () => {
    const none = acl([], []);
    expect(none.checkPublish("a")).toMatchObject({
      allowed: false,
      reason: 'publish to "a" is not allowed by ipc_publish (empty: nothing allowed)',
    });
    expect(none.checkSubscribe("a").allowed).toBe(false);
    expect(none.checkSubscribe("_INBOX.fs-tool.x").allowed).toBe(false);
    expect(none.checkPublish("_INBOX.x.1", { inReplyTo: "_INBOX.x.1" }).allowed).toBe(false);
  });

  it("refuses a manifest pattern that is not valid NATS grammar", () => {
    expect(() => acl(["a.b*"], [])).toThrow(
      'pattern "a.b*": wildcard inside token "b*"; "*" and ">" must stand alone',
    );
  });

  it("refuses a capsule id that is not one subject token", () => {
    expect(() => new IpcAcl({ publish: [], subscribe: [] }, { capsuleId: "a.b" })).toThrow(
      'capsule id "a.b" must be 1-64 characters of A-Z a-z 0-9 _ - (one subject token)',
    );
  });
});

// Small alphabets make matches frequent enough for the properties to bite.
const token = fc.constantFrom("a", "b", "c");
const subjectArb = fc.array(token, { minLength: 1, maxLength: 4 }).map((t) => t.join("."));
const patternArb = fc
  .tuple(
    fc.array(fc.constantFrom("a", "b", "c", "*"), { minLength: 1, maxLength: 4 }),
    fc.boolean(),
  )
  .map(([t, tail]) => (tail ? [...t, ">"] : t).join("."));

describe("IpcAcl properties", () => {
  it("publish is allowed exactly when some publish pattern matches", () => {
    fc.assert(
      fc.property(fc.array(patternArb, { maxLength: 4 }), subjectArb, (patterns, subject) => {
        const a = new IpcAcl({ publish: patterns, subscribe: [] }, { capsuleId: "p" });
        const expected = patterns.some((p) => subjectMatches(p, subject));
        expect(a.checkPublish(subject).allowed).toBe(expected);
        // and again, from the cache
        expect(a.checkPublish(subject).allowed).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });

  it("an allowed subscription only sees subjects some allowed pattern matches", () => {
    fc.assert(
      fc.property(
        fc.array(patternArb, { maxLength: 3 }),
        patternArb,
        fc.array(subjectArb, { minLength: 1, maxLength: 20 }),
        (allowed, requested, subjects) => {
          const a = new IpcAcl({ publish: [], subscribe: allowed }, { capsuleId: "p" });
          if (!a.checkSubscribe(requested).allowed) return;
          for (const s of subjects) {
            if (subjectMatches(requested, s)) {
              expect(allowed.some((p) => subjectMatches(p, s))).toBe(true);
            }
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
