import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { subjectMatches } from "../bus/subject.js";
import { protocolReference } from "./reference.js";
import { fromSubjectToken, MESSAGE_KINDS, subjects, subjectToken, TOPICS } from "./topics.js";

describe("topic table", () => {
  it("names only message kinds that have a schema", () => {
    for (const t of TOPICS) {
      expect(MESSAGE_KINDS.has(t.sends), t.sends).toBe(true);
      if (t.replies) expect(MESSAGE_KINDS.has(t.replies), t.replies).toBe(true);
    }
  });

  it("covers every family the brief requires", () => {
    const families = new Set(TOPICS.map((t) => t.family));
    for (const f of [
      "llm.v1",
      "tool.v1",
      "context.v1",
      "session.v1",
      "approval.v1",
      "audit.v1",
      "capsule.v1",
    ]) {
      expect(families.has(f), f).toBe(true);
    }
  });

  it("builds subjects that match the documented templates", () => {
    expect(subjects.llmChat("anthropic")).toBe("llm.v1.chat.anthropic");
    expect(subjects.toolExecute("read_file")).toBe("tool.v1.execute.read_file");
    expect(subjectMatches("tool.v1.execute.*", subjects.toolExecute("git.status"))).toBe(true);
    expect(subjects.sessionEvents("01J9ZX")).toBe("session.v1.events.01J9ZX");
  });

  it("percent-encodes names that would split or widen a subject token", () => {
    expect(subjectToken("git.status")).toBe("git%2Estatus");
    expect(subjectToken("a>b*c d")).toBe("a%3Eb%2Ac%20d");
    expect(subjectToken("é")).toBe("%C3%A9");
    for (const n of ["git.status", "a>b*c d", "é", "plain_name-1"]) {
      expect(fromSubjectToken(subjectToken(n))).toBe(n);
    }
    expect(() => subjectToken("")).toThrow("subject token is empty");
  });
});

describe("docs/protocol.md", () => {
  it("is the generated reference (run `make docs` after changing the protocol)", () => {
    const committed = readFileSync(new URL("../../docs/protocol.md", import.meta.url), "utf8");
    expect(committed).toBe(protocolReference());
  });
});
