import { describe, expect, it } from "vitest";
import { allow, deny } from "../decision.js";
import { argsHash } from "./action.js";
import { ApprovalBroker, ApprovalBrokerError } from "./broker.js";
import { type ApprovalRequest, ApprovalRequestError, newApprovalRequest } from "./request.js";

function req(
  timeoutMs = 60_000,
  over: Partial<Parameters<typeof newApprovalRequest>[0]> = {},
): ApprovalRequest {
  return newApprovalRequest({
    session: "s1",
    principal: "alice",
    capsule: "coder",
    action: { kind: "fs_write", target: "/w/a.txt", argsHash: argsHash({ content: "x" }) },
    reason: "guided mode: fs_write asks",
    timeoutMs,
    ...over,
  });
}

describe("ApprovalBroker", () => {
  it("denies at once when no approver is connected", async () => {
    const b = new ApprovalBroker();
    const o = await b.request(req());
    expect(o.decision).toEqual(deny("approval", "no approver connected"));
    expect(o.answer).toMatchObject({ decision: "deny", decidedBy: "no-approver" });
    expect(b.pending()).toEqual([]);
  });

  it("holds a request until a person decides, telling listeners both ways", async () => {
    const b = new ApprovalBroker();
    const seen: string[] = [];
    b.attach({
      requested: (r) => seen.push(`requested ${r.id}`),
      resolved: (id, a) => seen.push(`resolved ${id} ${a.decision}`),
    });
    const r = req();
    const p = b.request(r);
    expect(b.pending()).toEqual([r]);
    const now = b.decide(r.id, "allow_session", "alice");
    const o = await p;
    expect(o).toBe(now);
    expect(o.decision).toEqual(allow("approval", "allow_session by alice"));
    expect(o.answer).toMatchObject({ decision: "allow_session", decidedBy: "alice" });
    expect(seen).toEqual([`requested ${r.id}`, `resolved ${r.id} allow_session`]);
    expect(b.pending()).toEqual([]);
  });

  it("a deny answer denies, naming who", async () => {
    const b = new ApprovalBroker();
    b.attach({ requested: () => {} });
    const r = req();
    const p = b.request(r);
    b.decide(r.id, "deny", "bob");
    expect((await p).decision).toEqual(deny("approval", "denied by bob"));
  });

  it("times out to deny at the deadline, and a late answer is an error", async () => {
    const b = new ApprovalBroker();
    b.attach({ requested: () => {} });
    const r = req(25);
    const o = await b.request(r);
    expect(o.decision).toEqual(deny("approval", "approval timed out after 25 ms"));
    expect(o.answer).toMatchObject({ decision: "deny", decidedBy: "timeout" });
    expect(() => b.decide(r.id, "allow_once", "alice")).toThrow(
      new ApprovalBrokerError(`approval request "${r.id}" timed out`),
    );
  });

  it("a request already past its deadline is denied without waiting", async () => {
    const b = new ApprovalBroker({ now: () => 10_000 });
    b.attach({ requested: () => {} });
    const o = await b.request(req(100, { now: 1_000 }));
    expect(o.decision).toEqual(deny("approval", "approval timed out after 100 ms"));
  });

  it("refuses answers to unknown or answered requests and unknown decisions", async () => {
    const b = new ApprovalBroker();
    b.attach({ requested: () => {} });
    const r = req();
    const p = b.request(r);
    expect(() => b.decide(r.id, "allow_forever" as never, "alice")).toThrow(
      new ApprovalBrokerError(
        'unknown approval decision "allow_forever"; expected one of allow_once, allow_session, allow_workspace, allow_always, deny',
      ),
    );
    expect(() => b.decide(r.id, "allow_once", "")).toThrow("decidedBy must name who decided");
    b.decide(r.id, "allow_once", "alice");
    await p;
    expect(() => b.decide(r.id, "deny", "bob")).toThrow(
      new ApprovalBrokerError(
        `approval request "${r.id}" was already decided (allow_once by alice)`,
      ),
    );
    expect(() => b.decide("nope", "deny", "bob")).toThrow(
      new ApprovalBrokerError('unknown approval request "nope"'),
    );
    expect(() => b.request(r)).toThrow(
      new ApprovalRequestError(`approval request "${r.id}" was already submitted`),
    );
  });

  it("refuses malformed requests at the boundary", () => {
    const b = new ApprovalBroker();
    const r = req();
    expect(() => b.request({ ...r, action: { ...r.action, argsHash: "abc" } })).toThrow(
      new ApprovalRequestError(
        "invalid approval request at action.argsHash: must be 64 lowercase hex characters (sha256)",
      ),
    );
    expect(() => b.request({ ...r, deadline: r.createdAt })).toThrow(
      "invalid approval request at deadline: deadline must be after createdAt",
    );
    expect(() => b.request({ ...r, action: { ...r.action, kind: "kernel" as never } })).toThrow(
      'invalid approval request at action.kind: Invalid option: expected one of "fs_read"|"fs_write"|"net"|"process"|"tool"|"capsule_install"',
    );
  });

  it("close denies what is pending and everything after", async () => {
    const b = new ApprovalBroker();
    b.attach({ requested: () => {} });
    const p = b.request(req());
    b.close();
    expect((await p).decision).toEqual(deny("approval", "approval broker is closed"));
    expect((await b.request(req())).decision).toEqual(
      deny("approval", "approval broker is closed"),
    );
  });

  it("a listener that throws does not stop the others or allow anything", async () => {
    const b = new ApprovalBroker();
    const seen: string[] = [];
    b.attach({
      requested: () => {
        throw new Error("ui crashed");
      },
    });
    b.attach({ requested: (r) => seen.push(r.id) });
    const r = req();
    const p = b.request(r);
    expect(seen).toEqual([r.id]);
    b.decide(r.id, "deny", "bob");
    expect((await p).decision.allowed).toBe(false);
  });
});
