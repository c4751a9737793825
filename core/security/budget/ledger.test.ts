import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { allow, deny } from "../decision.js";
import { type BudgetEvent, BudgetLedger, BudgetLedgerError } from "./ledger.js";

const limits = {
  tokens: { perCall: 10_000, session: 50_000 },
  microUsd: { perCall: 500_000, session: 1_000_000 },
};

function ledger(
  over: Partial<Parameters<typeof BudgetLedger.inMemory>[1]> = {},
  events: BudgetEvent[] = [],
) {
  let t = 1_000;
  return BudgetLedger.inMemory(
    "s1",
    { ...limits, ...over },
    {
      now: () => t++,
      onEvent: (e) => events.push(e),
    },
  );
}

describe("BudgetLedger.reserve", () => {
  it("reserves within the limits and counts the reservation at once", async () => {
    const l = ledger();
    const r = await l.reserve({ tokens: 100, microUsd: 200_000, operation: "llm.generate" });
    expect(r.ok).toBe(true);
    expect(r.decision).toEqual(
      allow("budget", "reserved 200000 µUSD and 100 tokens within the session budget"),
    );
    expect(l.snapshot()).toMatchObject({
      reservedMicroUsd: 200_000,
      reservedTokens: 100,
      spentMicroUsd: 0,
    });
  });

  it.each([
    [
      { tokens: 1, microUsd: 600_000 },
      "call would spend 600000 µUSD but the per-call limit is 500000 µUSD",
    ],
    [
      { tokens: 10_001, microUsd: 1 },
      "call would spend 10001 tokens but the per-call limit is 10000 tokens",
    ],
  ])("denies a call over the per-call limit: %j", async (cost, reason) => {
    const l = ledger();
    const r = await l.reserve({ ...cost, operation: "op" });
    expect(r).toEqual({ ok: false, decision: deny("budget", reason) });
    expect(l.snapshot().reservedMicroUsd).toBe(0);
  });

  it("denies a call the rest of the session cannot cover, naming what is left", async () => {
    const l = ledger();
    for (const microUsd of [440_000, 440_000]) {
      const r = await l.reserve({ tokens: 0, microUsd, operation: "op" });
      expect(r.ok).toBe(true);
    }
    expect(await l.reserve({ tokens: 0, microUsd: 300_000, operation: "op" })).toEqual({
      ok: false,
      decision: deny("budget", "session has 120000 µUSD left, call needs 300000"),
    });
    const tokensLeft = ledger({ tokens: { perCall: 10_000, session: 5_000 } });
    await tokensLeft.reserve({ tokens: 4_000, microUsd: 0, operation: "op" });
    expect(await tokensLeft.reserve({ tokens: 2_000, microUsd: 0, operation: "op" })).toEqual({
      ok: false,
      decision: deny("budget", "session has 1000 tokens left, call needs 2000"),
    });
  });

  it("never lets concurrent reservations pass the limit together", async () => {
    const l = ledger();
    // 1000 calls of 3000 µUSD race for 1_000_000: exactly 333 may pass.
    const results = await Promise.all(
      Array.from({ length: 1000 }, () =>
        l.reserve({ tokens: 1, microUsd: 3_000, operation: "op" }),
      ),
    );
    expect(results.filter((r) => r.ok)).toHaveLength(333);
    expect(l.snapshot().reservedMicroUsd).toBe(999_000);
  });

  it("refuses malformed amounts as errors, not as denials", async () => {
    const l = ledger();
    await expect(l.reserve({ tokens: 1.5, microUsd: 1, operation: "op" })).rejects.toThrow(
      "reserve.tokens must be a non-negative safe integer (0 … 9007199254740991), got 1.5",
    );
    await expect(l.reserve({ tokens: 1, microUsd: 1, operation: "" })).rejects.toThrow(
      new BudgetLedgerError("reserve.operation must be a non-empty string"),
    );
  });
});

describe("BudgetLedger.settle and refund", () => {
  it("settling lower returns the difference", async () => {
    const l = ledger();
    const r = await l.reserve({ tokens: 1_000, microUsd: 300_000, operation: "op" });
    if (!r.ok) throw new Error("reserve failed");
    expect(await l.settle(r.reservation, { tokens: 400, microUsd: 120_000 })).toEqual({
      refunded: { tokens: 600, microUsd: 180_000 },
      overspend: null,
    });
    expect(l.snapshot()).toMatchObject({
      spentTokens: 400,
      spentMicroUsd: 120_000,
      reservedTokens: 0,
      reservedMicroUsd: 0,
      overspentMicroUsd: 0,
    });
  });

  it("settling higher records the overspend as spent and flags it", async () => {
    const events: BudgetEvent[] = [];
    const l = ledger({}, events);
    const r = await l.reserve({ tokens: 100, microUsd: 100_000, operation: "llm" });
    if (!r.ok) throw new Error("reserve failed");
    const res = await l.settle(r.reservation, { tokens: 100, microUsd: 130_000 });
    expect(res).toEqual({
      refunded: { tokens: 0, microUsd: 0 },
      overspend: { tokens: 0, microUsd: 30_000 },
    });
    expect(l.snapshot()).toMatchObject({ spentMicroUsd: 130_000, overspentMicroUsd: 30_000 });
    expect(events.filter((e) => e.kind === "overspend")).toEqual([
      {
        kind: "overspend",
        session: "s1",
        reservationId: r.reservation.id,
        operation: "llm",
        overspend: { tokens: 0, microUsd: 30_000 },
        at: expect.any(Number),
      },
    ]);
  });

  it("refund returns exactly what was reserved", async () => {
    const l = ledger();
    await l.reserve({ tokens: 7, microUsd: 11, operation: "op" });
    const before = l.snapshot();
    const r = await l.reserve({ tokens: 123, microUsd: 456_789, operation: "op" });
    if (!r.ok) throw new Error("reserve failed");
    expect(await l.refund(r.reservation)).toEqual({ tokens: 123, microUsd: 456_789 });
    const after = l.snapshot();
    expect({ ...after, warnedAt: null }).toEqual({ ...before, warnedAt: null });
  });

  it("refuses a second settle or refund, and unknown reservations", async () => {
    const l = ledger();
    const a = await l.reserve({ tokens: 1, microUsd: 1, operation: "op" });
    const b = await l.reserve({ tokens: 1, microUsd: 1, operation: "op" });
    if (!a.ok || !b.ok) throw new Error("reserve failed");
    await l.settle(a.reservation, { tokens: 1, microUsd: 1 });
    await l.refund(b.reservation);
    const id = a.reservation.id;
    await expect(l.settle(a.reservation, { tokens: 1, microUsd: 1 })).rejects.toThrow(
      new BudgetLedgerError(`cannot settle reservation ${id}: it was already settled`),
    );
    await expect(l.refund(a.reservation)).rejects.toThrow(
      new BudgetLedgerError(`cannot refund reservation ${id}: it was already settled`),
    );
    await expect(l.settle(b.reservation.id, { tokens: 0, microUsd: 0 })).rejects.toThrow(
      `cannot settle reservation ${b.reservation.id}: it was already refunded`,
    );
    await expect(l.refund("nope")).rejects.toThrow(
      new BudgetLedgerError("cannot refund reservation nope: no such reservation in session s1"),
    );
    expect(l.snapshot()).toMatchObject({ spentMicroUsd: 1, reservedMicroUsd: 0 });
  });

  it("keeps unsettled reservations counted and only reports them as stale", async () => {
    let t = 0;
    const l = BudgetLedger.inMemory("s1", limits, { now: () => t, staleAfterMs: 1_000 });
    await l.reserve({ tokens: 1, microUsd: 400_000, operation: "hung call" });
    t = 5_000;
    expect(l.snapshot()).toMatchObject({
      reservedMicroUsd: 400_000,
      pendingReservations: 1,
      staleReservations: 1,
    });
    expect(l.pending().map((r) => r.operation)).toEqual(["hung call"]);
  });
});

describe("warn threshold", () => {
  it("warns once per crossing and again after falling back below", async () => {
    const events: BudgetEvent[] = [];
    const l = ledger({}, events);
    const warns = () => events.filter((e) => e.kind === "warn_threshold");
    const a = await l.reserve({ tokens: 0, microUsd: 500_000, operation: "op" });
    expect(warns()).toHaveLength(0);
    const b = await l.reserve({ tokens: 0, microUsd: 300_000, operation: "op" }); // 80 % exactly
    expect(warns()).toEqual([
      {
        kind: "warn_threshold",
        session: "s1",
        currency: "microUsd",
        used: 800_000,
        limit: 1_000_000,
        percent: 80,
        at: expect.any(Number),
      },
    ]);
    await l.reserve({ tokens: 0, microUsd: 100_000, operation: "op" }); // still above: no new event
    expect(warns()).toHaveLength(1);
    if (!a.ok || !b.ok) throw new Error("reserve failed");
    await l.refund(a.reservation); // 400_000: below again, re-armed
    await l.reserve({ tokens: 0, microUsd: 450_000, operation: "op" }); // 850_000: crosses again
    expect(warns()).toHaveLength(2);
    expect(l.snapshot().warnedAt.microUsd).toBe(warns()[1]!.at);
    expect(l.snapshot().warnedAt.tokens).toBeNull();
  });
});

describe("yolo", () => {
  it("lets a breaching call through as a warning and keeps the breach on record", async () => {
    const events: BudgetEvent[] = [];
    const l = ledger({ yolo: true }, events);
    const r = await l.reserve({ tokens: 20_000, microUsd: 600_000, operation: "big" });
    const breach =
      "call would spend 600000 µUSD but the per-call limit is 500000 µUSD; call would spend 20000 tokens but the per-call limit is 10000 tokens";
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.decision).toEqual(allow("budget", `yolo: ${breach} (allowed as a warning)`));
    expect(r.reservation.breach).toBe(breach);
    expect(events.filter((e) => e.kind === "limit_breached")).toEqual([
      {
        kind: "limit_breached",
        session: "s1",
        operation: "big",
        reason: breach,
        at: expect.any(Number),
      },
    ]);
  });
});

describe("ledger invariant (property)", () => {
  it("spent + reserved never passes the session limit when calls settle at or under their reservation", async () => {
    const op = fc.oneof(
      fc.record({
        k: fc.constant("reserve" as const),
        usd: fc.integer({ min: 0, max: 600_000 }),
        tok: fc.integer({ min: 0, max: 12_000 }),
      }),
      fc.record({
        k: fc.constant("settle" as const),
        pick: fc.nat(),
        frac: fc.integer({ min: 0, max: 100 }),
      }),
      fc.record({ k: fc.constant("refund" as const), pick: fc.nat() }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
        const l = BudgetLedger.inMemory("p", limits);
        for (const o of ops) {
          const open = l.pending();
          if (o.k === "reserve")
            await l.reserve({ tokens: o.tok, microUsd: o.usd, operation: "op" });
          else if (open.length > 0) {
            const r = open[o.pick % open.length]!;
            if (o.k === "refund") await l.refund(r);
            else
              await l.settle(r, {
                tokens: Math.floor((r.tokens * o.frac) / 100),
                microUsd: Math.floor((r.microUsd * o.frac) / 100),
              });
          }
          const s = l.snapshot();
          expect(s.spentMicroUsd + s.reservedMicroUsd).toBeLessThanOrEqual(1_000_000);
          expect(s.spentTokens + s.reservedTokens).toBeLessThanOrEqual(50_000);
          expect(s.reservedMicroUsd).toBe(l.pending().reduce((a, r) => a + r.microUsd, 0));
        }
      }),
      { numRuns: 200 },
    );
  });
});
