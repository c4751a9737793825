/**
 * Budget and approval benchmarks: a reserve + settle round trip in memory and through the
 * fsync'd journal (one fsync per record vs group commit under 16 concurrent calls), and the
 * approval store's grant lookup — each next to a plain Map get / the same work without the
 * layer, in the same run.
 */
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { canonicalHash } from "../core/canonical-json.js";
import { argsHash } from "../core/security/approval/action.js";
import { newApprovalRequest } from "../core/security/approval/request.js";
import { ApprovalStore } from "../core/security/approval/store.js";
import { BudgetLedger } from "../core/security/budget/ledger.js";
import { runSuite } from "./lib.js";

const CONCURRENT = 16;
const MAX = Number.MAX_SAFE_INTEGER;
const limits = {
  tokens: { perCall: 1000, session: MAX },
  microUsd: { perCall: 1000, session: MAX },
};

async function roundTrip(ledger: BudgetLedger): Promise<void> {
  const r = await ledger.reserve({ tokens: 10, microUsd: 10, operation: "bench" });
  if (!r.ok) throw new Error(r.decision.allowed ? "unreachable" : r.decision.reason);
  await ledger.settle(r.reservation, { tokens: 5, microUsd: 5 });
}

export async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "astrid-bench-budget-"));
  try {
    const memory = BudgetLedger.inMemory("mem", limits);
    const each = await BudgetLedger.open({ dir, session: "each", limits, sync: "each" });
    const eachConc = await BudgetLedger.open({ dir, session: "each16", limits, sync: "each" });
    const group = await BudgetLedger.open({ dir, session: "group16", limits, sync: "group" });

    const store = await ApprovalStore.open({
      file: path.join(dir, "grants.json"),
      mintToken: async () => "unused",
      checkToken: async () => false,
    });
    const ctx = { session: "s1", principal: "alice", capsule: "coder" };
    const args = { repo: "unicity-astrid/astrid", title: "bench", labels: ["a", "b"] };
    const hit = { kind: "tool" as const, target: "github.create_issue", argsHash: argsHash(args) };
    const miss = { ...hit, target: "github.close_issue" };
    await store.record(
      newApprovalRequest({ ...ctx, action: hit, reason: "bench", timeoutMs: 1000 }),
      { decision: "allow_session", decidedBy: "alice", decidedAt: 0 },
    );
    const plain = new Map([[`${hit.kind}\u0000${hit.target}\u0000${hit.argsHash}`, true]]);
    const plainKey = `${hit.kind}\u0000${hit.target}\u0000${hit.argsHash}`;

    await runSuite("budget + approval", [
      { name: "Map.get (baseline)", fn: () => plain.get(plainKey) },
      {
        name: "ledger reserve+settle, memory",
        baseline: "Map.get (baseline)",
        goal: "p50 < 5 µs",
        fn: () => roundTrip(memory),
      },
      {
        name: "ledger reserve+settle, journal fsync each",
        baseline: "ledger reserve+settle, memory",
        goal: "2 fsyncs per call",
        fn: () => roundTrip(each),
      },
      {
        name: `${CONCURRENT}× concurrent, fsync each`,
        opsPerCall: CONCURRENT,
        fn: () => Promise.all(Array.from({ length: CONCURRENT }, () => roundTrip(eachConc))),
      },
      {
        name: `${CONCURRENT}× concurrent, group commit`,
        baseline: `${CONCURRENT}× concurrent, fsync each`,
        opsPerCall: CONCURRENT,
        fn: () => Promise.all(Array.from({ length: CONCURRENT }, () => roundTrip(group))),
      },
      {
        name: "approval store lookup, session hit",
        baseline: "Map.get (baseline)",
        goal: "p50 < 10 µs",
        fn: () => store.lookup(hit, ctx),
      },
      {
        name: "approval store lookup, miss",
        baseline: "Map.get (baseline)",
        fn: () => store.lookup(miss, ctx),
      },
      {
        name: "sha256(JSON.stringify(args)) (baseline)",
        fn: () => createHash("sha256").update(JSON.stringify(args)).digest("hex"),
      },
      {
        name: "canonicalHash(args)",
        baseline: "sha256(JSON.stringify(args)) (baseline)",
        fn: () => canonicalHash(args),
      },
    ]);
    await Promise.all([each.close(), eachConc.close(), group.close()]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
