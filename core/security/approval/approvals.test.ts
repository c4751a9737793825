import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { allow, deny } from "../decision.js";
import { argsHash } from "./action.js";
import { Approvals } from "./approvals.js";
import { ApprovalBroker } from "./broker.js";
import { type ApprovalRequest, newApprovalRequest } from "./request.js";
import { ApprovalStore } from "./store.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "astrid-approvals-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function setup() {
  const store = await ApprovalStore.open({
    file: path.join(dir, "grants.json"),
    mintToken: async () => {
      throw new Error("token issuer offline");
    },
    checkToken: async () => false,
  });
  const broker = new ApprovalBroker();
  const asked: ApprovalRequest[] = [];
  return { approvals: new Approvals(store, broker), broker, asked, store };
}

const req = (over: { workspace?: string } = {}) =>
  newApprovalRequest({
    session: "s1",
    principal: "alice",
    capsule: "coder",
    action: { kind: "net", target: "api.example.com:443", argsHash: argsHash({}) },
    reason: "safe mode: net asks",
    timeoutMs: 60_000,
    ...over,
  });

describe("Approvals.authorize", () => {
  it("asks once, then answers from the session grant without asking", async () => {
    const { approvals, broker } = await setup();
    const detach = broker.attach({
      requested: (r) => broker.decide(r.id, "allow_session", "alice"),
    });
    const first = await approvals.authorize(req());
    expect(first.decision).toEqual(allow("approval", "allow_session by alice"));
    expect(first.grant?.scope).toBe("session");
    detach(); // nobody left to ask: only the grant can allow now
    const r2 = req();
    const second = await approvals.authorize(r2);
    expect(second.answer).toBeNull();
    expect(second.decision).toEqual(
      allow("approval", `session grant by alice (request ${first.grant?.requestId})`),
    );
  });

  it("allow_once lets this call through and nothing after", async () => {
    const { approvals, broker } = await setup();
    const detach = broker.attach({ requested: (r) => broker.decide(r.id, "allow_once", "alice") });
    expect((await approvals.authorize(req())).decision.allowed).toBe(true);
    detach();
    expect((await approvals.authorize(req())).decision).toEqual(
      deny("approval", "no approver connected"),
    );
  });

  it("denies when the grant the person chose cannot be kept", async () => {
    const { approvals, broker } = await setup();
    broker.attach({ requested: (r) => broker.decide(r.id, "allow_always", "alice") });
    expect((await approvals.authorize(req())).decision).toEqual(
      deny("approval", "allow_always could not be recorded: token issuer offline"),
    );
  });
});
