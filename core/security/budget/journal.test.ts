import { appendFile, mkdtemp, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { deny } from "../decision.js";
import type { JournalSync } from "./journal.js";
import { BudgetJournal, BudgetJournalError, INTERVAL_SYNC_MS, journalPath } from "./journal.js";
import { BudgetLedger } from "./ledger.js";

const limits = {
  tokens: { perCall: 10_000, session: 50_000 },
  microUsd: { perCall: 500_000, session: 1_000_000 },
};

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "astrid-budget-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const open = (sync: JournalSync = "each") =>
  BudgetLedger.open({ dir, session: "sess-1", limits, sync });
const file = () => journalPath(dir, "sess-1");

describe("budget journal persistence", () => {
  it("a restart does not reset spending", async () => {
    const l = await open();
    const a = await l.reserve({ tokens: 500, microUsd: 300_000, operation: "llm" });
    const b = await l.reserve({ tokens: 10, microUsd: 20_000, operation: "tool" });
    const c = await l.reserve({ tokens: 1, microUsd: 500_000, operation: "llm" });
    if (!a.ok || !b.ok || !c.ok) throw new Error("reserve failed");
    await l.settle(a.reservation, { tokens: 450, microUsd: 280_000 });
    await l.refund(b.reservation);
    const before = l.snapshot();
    await l.close();

    const again = await open();
    expect(again.tornTail).toBeNull();
    expect(again.snapshot()).toEqual(before);
    expect(before).toMatchObject({ spentMicroUsd: 280_000, reservedMicroUsd: 500_000 });
    // The crossing at 780_000 ≥ 80 % was replayed with its original time, not re-emitted.
    expect(before.warnedAt.microUsd).not.toBeNull();
    // The pending reservation still counts (fail closed) and can be settled after the restart.
    expect(await again.reserve({ tokens: 0, microUsd: 300_000, operation: "op" })).toEqual({
      ok: false,
      decision: deny("budget", "session has 220000 µUSD left, call needs 300000"),
    });
    await again.settle(c.reservation.id, { tokens: 1, microUsd: 400_000 });
    expect(again.snapshot()).toMatchObject({ spentMicroUsd: 680_000, reservedMicroUsd: 0 });
    await again.close();
  });

  it.each(["each", "group", "interval"] as const)(
    "concurrent reservations with fsync=%s never pass the limit, before or after a restart",
    async (sync) => {
      const l = await open(sync);
      const results = await Promise.all(
        Array.from({ length: 200 }, () =>
          l.reserve({ tokens: 0, microUsd: 7_000, operation: "op" }),
        ),
      );
      expect(results.filter((r) => r.ok)).toHaveLength(142);
      await l.close();
      const lines = (await readFile(file(), "utf8")).trimEnd().split("\n");
      expect(lines).toHaveLength(142);
      const again = await open(sync);
      expect(again.snapshot().reservedMicroUsd).toBe(994_000);
      await again.close();
    },
  );

  it("in interval mode, a record is in the file when its call returns, before any fsync", async () => {
    const l = await open("interval");
    const r = await l.reserve({ tokens: 0, microUsd: 5_000, operation: "op" });
    expect(r.ok).toBe(true);
    // Written (a killed process cannot take it back); the fsync follows within the interval.
    expect((await readFile(file(), "utf8")).trimEnd().split("\n")).toHaveLength(1);
    await new Promise((res) => setTimeout(res, INTERVAL_SYNC_MS * 3));
    await l.close();
    const again = await open("interval");
    expect(again.snapshot().reservedMicroUsd).toBe(5_000);
    await again.close();
  });

  it("tolerates and reports a torn last line, treating its reservation as still pending", async () => {
    const l = await open();
    const r = await l.reserve({ tokens: 0, microUsd: 100_000, operation: "llm" });
    if (!r.ok) throw new Error("reserve failed");
    await l.settle(r.reservation, { tokens: 0, microUsd: 10_000 });
    await l.close();
    // Simulate a crash in the middle of writing the settle line.
    const size = (await stat(file())).size;
    await truncate(file(), size - 9);
    const settleLine = (await readFile(file(), "utf8")).split("\n")[1]!;

    const again = await open();
    expect(again.tornTail).toEqual({ line: 2, bytes: settleLine.length });
    expect(again.snapshot()).toMatchObject({ spentMicroUsd: 0, reservedMicroUsd: 100_000 });
    // The torn bytes are gone, so the next record starts on a clean line.
    await again.refund(r.reservation.id);
    await again.close();
    const third = await open();
    expect(third.tornTail).toBeNull();
    expect(third.snapshot()).toMatchObject({ spentMicroUsd: 0, reservedMicroUsd: 0 });
    await third.close();
  });

  it("drops a complete-looking last record that lost its newline", async () => {
    const l = await open();
    await l.reserve({ tokens: 0, microUsd: 1, operation: "op" });
    await l.close();
    await truncate(file(), (await stat(file())).size - 1);
    const again = await open();
    expect(again.tornTail).toMatchObject({ line: 1 });
    expect(again.snapshot().reservedMicroUsd).toBe(0);
    await again.close();
  });

  it("refuses a corrupt line in the middle", async () => {
    const l = await open();
    await l.reserve({ tokens: 0, microUsd: 1, operation: "op" });
    await l.close();
    const good = await readFile(file(), "utf8");
    await writeFile(file(), `${good}{"t":"reserve","id":"x"\n${good}`);
    await expect(open()).rejects.toThrow(
      new BudgetJournalError(
        `budget journal ${file()} line 2 is corrupt (not JSON); only a torn last line is tolerated`,
      ),
    );
    await writeFile(file(), `{"t":"refund","id":"x","at":-1}\n${good}`);
    await expect(open()).rejects.toThrow(
      `budget journal ${file()} line 1 is corrupt (at: Too small: expected number to be >=0); only a torn last line is tolerated`,
    );
  });

  it("refuses a journal that settles a reservation it never made", async () => {
    await appendFile(
      file(),
      '{"t":"settle","id":"ghost","tokens":0,"microUsd":0,"at":1}\n{"t":"refund","id":"x","at":1}\n',
    );
    await expect(open()).rejects.toThrow(
      `budget journal ${file()} line 1 cannot be replayed: cannot settle reservation ghost: no such reservation in session sess-1`,
    );
  });

  it("denies and undoes the reservation when the journal cannot be written", async () => {
    const l = await open();
    await l.close();
    const r = await l.reserve({ tokens: 1, microUsd: 1, operation: "op" });
    expect(r).toEqual({
      ok: false,
      decision: deny("budget", `budget journal write failed: budget journal ${file()} is closed`),
    });
    expect(l.snapshot()).toMatchObject({ reservedMicroUsd: 0, pendingReservations: 0 });
  });

  it("refuses session ids that could escape the journal directory", () => {
    expect(() => journalPath(dir, "../etc/x")).toThrow(
      new BudgetJournalError(
        'session id "../etc/x" cannot name a journal file: expected 1–128 characters of [A-Za-z0-9._-], not starting with "." "_" or "-"',
      ),
    );
  });

  it("creates the journal readable by its owner only", async () => {
    const { journal } = await BudgetJournal.open(path.join(dir, "x.budget.jsonl"));
    await journal.close();
    expect((await stat(path.join(dir, "x.budget.jsonl"))).mode & 0o777).toBe(0o600);
  });
});
