/**
 * Upstream Astrid issue #150: a call that reserved budget and was then denied by approval
 * leaked its reservation. Here reserve → approval deny → refund must leave the ledger exactly
 * where it was, in memory and after a restart.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { argsHash } from "../approval/action.js";
import { ApprovalBroker } from "../approval/broker.js";
import { newApprovalRequest } from "../approval/request.js";
import { BudgetLedger } from "./ledger.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "astrid-150-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

it("a reservation denied by approval is refunded exactly (upstream #150)", async () => {
  const limits = {
    tokens: { perCall: 1000, session: 5000 },
    microUsd: { perCall: 400_000, session: 1_000_000 },
  };
  const ledger = await BudgetLedger.open({ dir, session: "s150", limits });
  const warmup = await ledger.reserve({ tokens: 10, microUsd: 12_345, operation: "earlier" });
  if (!warmup.ok) throw new Error("reserve failed");
  await ledger.settle(warmup.reservation, { tokens: 9, microUsd: 12_000 });
  const before = ledger.snapshot();

  const broker = new ApprovalBroker();
  broker.attach({ requested: (r) => broker.decide(r.id, "deny", "bob") });
  const r = await ledger.reserve({
    tokens: 999,
    microUsd: 399_999,
    operation: "tool.v1.execute.rm",
  });
  if (!r.ok) throw new Error("reserve failed");
  const outcome = await broker.request(
    newApprovalRequest({
      session: "s150",
      principal: "alice",
      capsule: "coder",
      action: { kind: "tool", target: "rm", argsHash: argsHash({ path: "/" }) },
      reason: "guided",
      timeoutMs: 60_000,
    }),
  );
  expect(outcome.decision.allowed).toBe(false);
  expect(await ledger.refund(r.reservation)).toEqual({ tokens: 999, microUsd: 399_999 });
  expect(ledger.snapshot()).toEqual(before);
  await ledger.close();

  const reopened = await BudgetLedger.open({ dir, session: "s150", limits });
  expect(reopened.snapshot()).toEqual(before);
  await reopened.close();
});
