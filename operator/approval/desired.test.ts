import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { KubeObject } from "../runtime/rest.js";
import {
  type ApprovalQuestion,
  approvalName,
  DEADLINE_ANNOTATION,
  desiredApproval,
  EMPTY_ARGS_HASH,
  findPreApproval,
} from "./desired.js";
import { approvalState } from "./reconciler.js";

const H = "a".repeat(64);
const q: ApprovalQuestion = {
  namespace: "ns",
  session: "run1",
  sessionUid: "sess-uid",
  capsule: "fs",
  principal: "alice",
  requestId: "req-1",
  action: { kind: "fs_write", target: "/workspace/SUMMARY.md", argsHash: H },
  reason: "write the summary",
  deadline: Date.parse("2026-01-01T00:05:00Z"),
};
const approval = (name: string, spec: Record<string, unknown>): KubeObject => ({
  apiVersion: "astrid.dev/v1alpha1",
  kind: "Approval",
  metadata: { name, namespace: "ns" },
  spec: { session: "run1", capsule: "fs", action: q.action, reason: "r", ...spec },
});

describe("approvalName", () => {
  it("is <session>-<first 10 hex of sha256(requestId)>", () => {
    const hex = createHash("sha256").update("req-1").digest("hex").slice(0, 10);
    expect(approvalName("run1", "req-1")).toBe(`run1-${hex}`);
    expect(EMPTY_ARGS_HASH).toBe(
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
  });
});

describe("desiredApproval", () => {
  it("asks the question with the deadline, the request id and the principal, owned (not controlled) by the session", () => {
    const a = desiredApproval(q);
    expect(a.metadata?.name).toBe(approvalName("run1", "req-1"));
    expect(a.metadata?.annotations).toEqual({
      [DEADLINE_ANNOTATION]: "2026-01-01T00:05:00.000Z",
      "astrid.dev/request-id": "req-1",
      "astrid.dev/principal": "alice",
    });
    expect(a.metadata?.ownerReferences).toEqual([
      { apiVersion: "astrid.dev/v1alpha1", kind: "AgentSession", name: "run1", uid: "sess-uid" },
    ]);
    expect(a.spec).toEqual({
      session: "run1",
      capsule: "fs",
      action: q.action,
      reason: "write the summary",
    });
  });
});

describe("findPreApproval", () => {
  it("matches a decided Approval of the same session, capsule, kind, target and argsHash only", () => {
    const ok = approval("pre", { decision: "allow_session", decidedBy: "gitops" });
    const undecided = approval("open", {});
    const otherArgs = approval("args", {
      decision: "allow_once",
      decidedBy: "x",
      action: { ...q.action, argsHash: "b".repeat(64) },
    });
    const otherCapsule = approval("cap", {
      decision: "allow_once",
      decidedBy: "x",
      capsule: "shell",
    });
    expect(findPreApproval([undecided, otherArgs, otherCapsule], q)).toBeUndefined();
    expect(findPreApproval([undecided, ok, otherArgs], q)?.metadata.name).toBe("pre");
  });

  it("lets a deny win over an allow for the same action", () => {
    const allow = approval("allow", { decision: "allow_always", decidedBy: "a" });
    const deny = approval("deny", { decision: "deny", decidedBy: "b" });
    expect(findPreApproval([allow, deny], q)?.metadata.name).toBe("deny");
  });
});

describe("approvalState", () => {
  const now = Date.parse("2026-01-01T00:04:00Z");
  const withDeadline = (spec: Record<string, unknown>, status?: Record<string, unknown>) =>
    ({
      ...approval("a", spec),
      metadata: {
        name: "a",
        namespace: "ns",
        annotations: { [DEADLINE_ANNOTATION]: "2026-01-01T00:05:00.000Z" },
      },
      ...(status ? { status } : {}),
    }) as never;
  it("is Pending until the deadline, then Expired; Decided once decided; Expired stays", () => {
    expect(approvalState(withDeadline({}), now)).toEqual({ state: "Pending", untilMs: 60_000 });
    expect(approvalState(withDeadline({}), now + 60_000)).toEqual({ state: "Expired" });
    expect(approvalState(withDeadline({ decision: "deny", decidedBy: "bob" }), now)).toEqual({
      state: "Decided",
    });
    expect(
      approvalState(
        withDeadline({ decision: "deny", decidedBy: "bob" }, { state: "Expired" }),
        now,
      ),
    ).toEqual({
      state: "Expired",
    });
    expect(approvalState(approval("hand", {}) as never, now)).toEqual({ state: "Pending" });
  });
});
