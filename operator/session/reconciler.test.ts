import { describe, expect, it } from "vitest";
import type { KubeObject } from "../runtime/rest.js";
import { countPending, isFinished } from "./reconciler.js";

const approval = (
  name: string,
  session: string,
  extra: Record<string, unknown> = {},
): KubeObject => ({
  metadata: { name, namespace: "ns" },
  spec: {
    session,
    capsule: "fs",
    action: { kind: "tool", target: "t", argsHash: "a".repeat(64) },
    reason: "",
  },
  ...extra,
});

describe("countPending", () => {
  it("counts the session's undecided, unexpired Approvals only", () => {
    const list = [
      approval("a", "run1"),
      approval("b", "run1", { status: { state: "Pending" } }),
      approval("c", "run1", { status: { state: "Expired" } }),
      {
        ...approval("d", "run1"),
        spec: { ...(approval("d", "run1").spec as object), decision: "deny", decidedBy: "x" },
      },
      approval("e", "other"),
    ];
    expect(countPending(list, "run1")).toBe(2);
    expect(countPending(list, "other")).toBe(1);
  });
});

describe("isFinished", () => {
  it("is true once Succeeded or Failed is True", () => {
    const withCond = (type: string, status: string): KubeObject => ({
      status: { conditions: [{ type, status }] },
    });
    expect(isFinished(withCond("Succeeded", "True"))).toBe(true);
    expect(isFinished(withCond("Failed", "True"))).toBe(true);
    expect(isFinished(withCond("Failed", "False"))).toBe(false);
    expect(isFinished({})).toBe(false);
  });
});
