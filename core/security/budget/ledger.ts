/**
 * The budget of one session in two currencies. A call reserves its worst-case cost before it
 * runs and settles (or is refunded) after, so the limit is checked against spent + in flight:
 * two concurrent calls cannot both pass the last dollar. The check and the reservation happen
 * in one synchronous step (no await between them), which is what makes them atomic in Node;
 * the journal write comes after and a failed write undoes the reservation.
 *
 * Decisions documented in docs/security.md ("Budgets"):
 * - A reservation is never refunded by a timer. A call that hangs may still have cost money at
 *   the provider; refunding it on a TTL would let a hung call plus its retries pass the limit.
 *   Reservations older than `staleAfterMs` are only reported (snapshot.staleReservations) and
 *   stay counted until someone settles or refunds them.
 * - Pending reservations found when replaying the journal count as spent (still reserved) for
 *   the same reason.
 * - Settling above the reservation is recorded as spent and flagged as overspend: the money is
 *   gone, pretending otherwise would only hide it.
 */
import { randomUUID } from "node:crypto";
import { allow, type Decision, deny } from "../decision.js";
import {
  type Amount,
  assertAmount,
  assertAmounts,
  CURRENCIES,
  type Currency,
  checkedAdd,
  checkedSub,
  formatAmount,
  reachesPercent,
} from "./amount.js";
import {
  BudgetJournal,
  BudgetJournalError,
  type JournalRecord,
  type JournalSync,
  journalPath,
  type TornTail,
} from "./journal.js";
import { type BudgetLimits, type BudgetLimitsInput, parseBudgetLimits } from "./limits.js";

export interface ReserveRequest {
  readonly tokens: number;
  readonly microUsd: number;
  /** What the money is for (e.g. "llm.v1.request.generate.anthropic"), kept in the journal. */
  readonly operation: string;
}

export interface Reservation extends Amount {
  readonly id: string;
  readonly session: string;
  readonly operation: string;
  readonly createdAt: number;
  /** Why the limit would have denied this call, when yolo let it through. */
  readonly breach?: string;
}

export type ReserveResult =
  | { readonly ok: true; readonly reservation: Reservation; readonly decision: Decision }
  | { readonly ok: false; readonly decision: Decision };

export interface SettleResult {
  /** Reserved but not used: returned to the session. */
  readonly refunded: Amount;
  /** Used beyond the reservation, or null. Already counted as spent. */
  readonly overspend: Amount | null;
}

export type BudgetEvent =
  | {
      readonly kind: "warn_threshold";
      readonly session: string;
      readonly currency: Currency;
      /** Spent + reserved at the crossing. */
      readonly used: number;
      readonly limit: number;
      readonly percent: number;
      readonly at: number;
    }
  | {
      readonly kind: "limit_breached";
      readonly session: string;
      readonly operation: string;
      readonly reason: string;
      readonly at: number;
    }
  | {
      readonly kind: "overspend";
      readonly session: string;
      readonly reservationId: string;
      readonly operation: string;
      readonly overspend: Amount;
      readonly at: number;
    };

export interface BudgetSnapshot {
  readonly session: string;
  readonly spentTokens: number;
  readonly spentMicroUsd: number;
  readonly reservedTokens: number;
  readonly reservedMicroUsd: number;
  readonly overspentTokens: number;
  readonly overspentMicroUsd: number;
  readonly limitTokensPerCall: number;
  readonly limitTokensSession: number;
  readonly limitMicroUsdPerCall: number;
  readonly limitMicroUsdSession: number;
  readonly warnPercent: number;
  readonly yolo: boolean;
  /** When each currency last crossed the warn threshold (ms since epoch), or null. */
  readonly warnedAt: { readonly tokens: number | null; readonly microUsd: number | null };
  readonly pendingReservations: number;
  /** Pending for longer than staleAfterMs: a call that never settled. */
  readonly staleReservations: number;
}

export interface LedgerOptions {
  readonly now?: () => number;
  readonly onEvent?: (event: BudgetEvent) => void;
  /** Age after which a pending reservation is reported as stale (default 10 minutes). */
  readonly staleAfterMs?: number;
}

export interface OpenLedgerOptions extends LedgerOptions {
  /** Directory holding `<session>.budget.jsonl`. */
  readonly dir: string;
  readonly session: string;
  readonly limits: BudgetLimitsInput;
  readonly sync?: JournalSync;
}

export class BudgetLedgerError extends Error {
  override readonly name = "BudgetLedgerError";
}

type Finished = "settled" | "refunded";

export class BudgetLedger {
  readonly limits: BudgetLimits;
  /** The torn last line dropped when the journal was opened, if any. */
  tornTail: TornTail | null = null;

  private readonly now: () => number;
  private readonly onEvent: (event: BudgetEvent) => void;
  private readonly staleAfterMs: number;
  private readonly pendingById = new Map<string, Reservation>();
  private readonly finished = new Map<string, Finished>();
  private spent = { tokens: 0, microUsd: 0 };
  private reserved = { tokens: 0, microUsd: 0 };
  private overspent = { tokens: 0, microUsd: 0 };
  private readonly warned = { tokens: false, microUsd: false };
  private readonly warnedAt: { tokens: number | null; microUsd: number | null } = {
    tokens: null,
    microUsd: null,
  };
  private replaying = false;

  private constructor(
    readonly session: string,
    limits: BudgetLimitsInput,
    private readonly journal: BudgetJournal | null,
    opts: LedgerOptions,
  ) {
    this.limits = parseBudgetLimits(limits);
    this.now = opts.now ?? Date.now;
    this.onEvent = opts.onEvent ?? (() => {});
    this.staleAfterMs = opts.staleAfterMs ?? 10 * 60_000;
  }

  /** A ledger without persistence (tests, benches, throwaway sessions). */
  static inMemory(
    session: string,
    limits: BudgetLimitsInput,
    opts: LedgerOptions = {},
  ): BudgetLedger {
    return new BudgetLedger(session, limits, null, opts);
  }

  /** Opens the session's journal and replays it; spending survives restarts. */
  static async open(opts: OpenLedgerOptions): Promise<BudgetLedger> {
    const file = journalPath(opts.dir, opts.session);
    const limits = parseBudgetLimits(opts.limits);
    const { journal, records, tornTail } = await BudgetJournal.open(file, opts.sync ?? "each");
    const ledger = new BudgetLedger(opts.session, limits, journal, opts);
    ledger.tornTail = tornTail;
    try {
      ledger.replay(file, records);
    } catch (e) {
      await journal.close();
      throw e;
    }
    return ledger;
  }

  async reserve(req: ReserveRequest): Promise<ReserveResult> {
    assertAmount("reserve.tokens", req.tokens);
    assertAmount("reserve.microUsd", req.microUsd);
    if (typeof req.operation !== "string" || req.operation.length === 0) {
      throw new BudgetLedgerError("reserve.operation must be a non-empty string");
    }
    const breaches = this.breaches(req);
    if (breaches.length > 0 && !this.limits.yolo) {
      return { ok: false, decision: deny("budget", breaches[0]!) };
    }
    const breach = breaches.length > 0 ? breaches.join("; ") : undefined;
    const record: JournalRecord = {
      t: "reserve",
      id: randomUUID(),
      op: req.operation,
      tokens: req.tokens,
      microUsd: req.microUsd,
      at: this.now(),
      ...(breach ? { breach } : {}),
    };
    // Counted before the first await: a concurrent reserve already sees this one.
    const reservation = this.applyReserve(record);
    if (this.journal) {
      try {
        await this.journal.append(record);
      } catch (e) {
        this.undoReserve(reservation);
        const why = e instanceof Error ? e.message : String(e);
        return { ok: false, decision: deny("budget", `budget journal write failed: ${why}`) };
      }
    }
    const decision = breach
      ? allow("budget", `yolo: ${breach} (allowed as a warning)`)
      : allow(
          "budget",
          `reserved ${formatAmount("microUsd", req.microUsd)} and ${formatAmount("tokens", req.tokens)} within the session budget`,
        );
    return { ok: true, reservation, decision };
  }

  /** Replaces the reservation by what the call really used. */
  async settle(reservation: Reservation | string, actual: Amount): Promise<SettleResult> {
    assertAmounts("settle.actual", actual);
    const r = this.takePending(reservation, "settle");
    const record: JournalRecord = {
      t: "settle",
      id: r.id,
      tokens: actual.tokens,
      microUsd: actual.microUsd,
      at: this.now(),
    };
    const result = this.applySettle(record);
    await this.journal?.append(record);
    return result;
  }

  /** Returns the whole reservation: the call was denied later (approval) or failed. */
  async refund(reservation: Reservation | string): Promise<Amount> {
    const r = this.takePending(reservation, "refund");
    const record: JournalRecord = { t: "refund", id: r.id, at: this.now() };
    this.applyRefund(record);
    await this.journal?.append(record);
    return { tokens: r.tokens, microUsd: r.microUsd };
  }

  pending(): Reservation[] {
    return [...this.pendingById.values()];
  }

  snapshot(): BudgetSnapshot {
    const cutoff = this.now() - this.staleAfterMs;
    let stale = 0;
    for (const r of this.pendingById.values()) if (r.createdAt <= cutoff) stale++;
    return {
      session: this.session,
      spentTokens: this.spent.tokens,
      spentMicroUsd: this.spent.microUsd,
      reservedTokens: this.reserved.tokens,
      reservedMicroUsd: this.reserved.microUsd,
      overspentTokens: this.overspent.tokens,
      overspentMicroUsd: this.overspent.microUsd,
      limitTokensPerCall: this.limits.tokens.perCall,
      limitTokensSession: this.limits.tokens.session,
      limitMicroUsdPerCall: this.limits.microUsd.perCall,
      limitMicroUsdSession: this.limits.microUsd.session,
      warnPercent: this.limits.warnPercent,
      yolo: this.limits.yolo,
      warnedAt: { ...this.warnedAt },
      pendingReservations: this.pendingById.size,
      staleReservations: stale,
    };
  }

  async close(): Promise<void> {
    await this.journal?.close();
  }

  /** Every limit this request would break, money first, per-call before session. */
  private breaches(req: ReserveRequest): string[] {
    const out: string[] = [];
    for (const c of ["microUsd", "tokens"] as const) {
      const need = req[c];
      const perCall = this.limits[c].perCall;
      if (need > perCall) {
        out.push(
          `call would spend ${formatAmount(c, need)} but the per-call limit is ${formatAmount(c, perCall)}`,
        );
        continue;
      }
      const used = checkedAdd(this.spent[c], this.reserved[c]);
      const left = used >= this.limits[c].session ? 0 : this.limits[c].session - used;
      if (need > left) out.push(`session has ${formatAmount(c, left)} left, call needs ${need}`);
    }
    return out;
  }

  private takePending(reservation: Reservation | string, verb: "settle" | "refund"): Reservation {
    const id = typeof reservation === "string" ? reservation : reservation.id;
    const r = this.pendingById.get(id);
    if (r) return r;
    const done = this.finished.get(id);
    if (done)
      throw new BudgetLedgerError(`cannot ${verb} reservation ${id}: it was already ${done}`);
    throw new BudgetLedgerError(
      `cannot ${verb} reservation ${id}: no such reservation in session ${this.session}`,
    );
  }

  private applyReserve(rec: Extract<JournalRecord, { t: "reserve" }>): Reservation {
    if (this.pendingById.has(rec.id) || this.finished.has(rec.id)) {
      throw new BudgetLedgerError(`reservation id ${rec.id} is used twice`);
    }
    const reservation: Reservation = {
      id: rec.id,
      session: this.session,
      operation: rec.op,
      tokens: rec.tokens,
      microUsd: rec.microUsd,
      createdAt: rec.at,
      ...(rec.breach ? { breach: rec.breach } : {}),
    };
    this.reserved = {
      tokens: checkedAdd(this.reserved.tokens, rec.tokens),
      microUsd: checkedAdd(this.reserved.microUsd, rec.microUsd),
    };
    this.pendingById.set(rec.id, reservation);
    if (rec.breach) {
      this.emit({
        kind: "limit_breached",
        session: this.session,
        operation: rec.op,
        reason: rec.breach,
        at: rec.at,
      });
    }
    this.checkThresholds(rec.at);
    return reservation;
  }

  private undoReserve(r: Reservation): void {
    this.pendingById.delete(r.id);
    this.reserved = {
      tokens: checkedSub(this.reserved.tokens, r.tokens),
      microUsd: checkedSub(this.reserved.microUsd, r.microUsd),
    };
    this.checkThresholds(this.now());
  }

  private applySettle(rec: Extract<JournalRecord, { t: "settle" }>): SettleResult {
    const r = this.takePending(rec.id, "settle");
    const spent = {
      tokens: checkedAdd(this.spent.tokens, rec.tokens),
      microUsd: checkedAdd(this.spent.microUsd, rec.microUsd),
    };
    const over = { tokens: 0, microUsd: 0 };
    const refunded = { tokens: 0, microUsd: 0 };
    for (const c of CURRENCIES) {
      if (rec[c] > r[c]) over[c] = rec[c] - r[c];
      else refunded[c] = r[c] - rec[c];
    }
    const overspent = {
      tokens: checkedAdd(this.overspent.tokens, over.tokens),
      microUsd: checkedAdd(this.overspent.microUsd, over.microUsd),
    };
    // All checks passed: commit.
    this.spent = spent;
    this.overspent = overspent;
    this.release(r, "settled");
    const overspend = over.tokens > 0 || over.microUsd > 0 ? over : null;
    if (overspend) {
      this.emit({
        kind: "overspend",
        session: this.session,
        reservationId: r.id,
        operation: r.operation,
        overspend,
        at: rec.at,
      });
    }
    this.checkThresholds(rec.at);
    return { refunded, overspend };
  }

  private applyRefund(rec: Extract<JournalRecord, { t: "refund" }>): void {
    const r = this.takePending(rec.id, "refund");
    this.release(r, "refunded");
    this.checkThresholds(rec.at);
  }

  private release(r: Reservation, how: Finished): void {
    this.reserved = {
      tokens: checkedSub(this.reserved.tokens, r.tokens),
      microUsd: checkedSub(this.reserved.microUsd, r.microUsd),
    };
    this.pendingById.delete(r.id);
    this.finished.set(r.id, how);
  }

  /** One warning per upward crossing; falling back below re-arms it. */
  private checkThresholds(at: number): void {
    for (const c of CURRENCIES) {
      const used = checkedAdd(this.spent[c], this.reserved[c]);
      const limit = this.limits[c].session;
      const above = reachesPercent(used, limit, this.limits.warnPercent);
      if (above && !this.warned[c]) {
        this.warned[c] = true;
        this.warnedAt[c] = at;
        this.emit({
          kind: "warn_threshold",
          session: this.session,
          currency: c,
          used,
          limit,
          percent: this.limits.warnPercent,
          at,
        });
      } else if (!above && this.warned[c]) {
        this.warned[c] = false;
      }
    }
  }

  private emit(event: BudgetEvent): void {
    // Replay rebuilds state; the events were already emitted by the process that wrote them.
    if (this.replaying) return;
    try {
      this.onEvent(event);
    } catch {
      // A broken metrics sink must not turn into a budget bypass or a crash mid-update.
    }
  }

  private replay(file: string, records: readonly JournalRecord[]): void {
    this.replaying = true;
    try {
      records.forEach((rec, i) => {
        try {
          if (rec.t === "reserve") this.applyReserve(rec);
          else if (rec.t === "settle") this.applySettle(rec);
          else this.applyRefund(rec);
        } catch (e) {
          const why = e instanceof Error ? e.message : String(e);
          throw new BudgetJournalError(
            `budget journal ${file} line ${i + 1} cannot be replayed: ${why}`,
          );
        }
      });
    } finally {
      this.replaying = false;
    }
  }
}
