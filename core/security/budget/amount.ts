/**
 * Budget amounts: tokens and money in integer micro-units (1 USD = 1_000_000 µUSD).
 *
 * Why safe integers and not floats: 0.1 + 0.2 !== 0.3, and a ledger that rounds can be walked
 * past its limit one rounding error at a time. Why `number` and not `bigint`: amounts travel as
 * JSON (journal, bus, CRD status) where bigint does not survive, and 2^53 − 1 µUSD is about
 * 9 billion USD — far beyond any session. So every amount is a non-negative safe integer and
 * every sum is checked: a total that would pass Number.MAX_SAFE_INTEGER throws instead of
 * silently losing precision (a precision loss could make `spent + cost <= limit` true when it
 * is not).
 */

export type Currency = "tokens" | "microUsd";

export const CURRENCIES: readonly Currency[] = ["tokens", "microUsd"];

/** An amount in both currencies. */
export interface Amount {
  readonly tokens: number;
  readonly microUsd: number;
}

export const ZERO: Amount = Object.freeze({ tokens: 0, microUsd: 0 });

export class BudgetAmountError extends Error {
  override readonly name = "BudgetAmountError";
}

/** How an amount of a currency is written in reasons and docs. */
export function formatAmount(currency: Currency, value: number): string {
  return currency === "tokens" ? `${value} tokens` : `${value} µUSD`;
}

/** Refuses anything that is not a non-negative safe integer, naming the field. */
export function assertAmount(field: string, value: unknown): asserts value is number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new BudgetAmountError(
      `${field} must be a non-negative safe integer (0 … ${Number.MAX_SAFE_INTEGER}), got ${describe(value)}`,
    );
  }
}

export function assertAmounts(field: string, amount: Amount): void {
  assertAmount(`${field}.tokens`, amount.tokens);
  assertAmount(`${field}.microUsd`, amount.microUsd);
}

/** a + b, refusing a sum that leaves the safe-integer range. */
export function checkedAdd(a: number, b: number): number {
  const sum = a + b;
  if (!Number.isSafeInteger(sum)) {
    throw new BudgetAmountError(
      `budget overflow: ${a} + ${b} exceeds ${Number.MAX_SAFE_INTEGER} (2^53 − 1)`,
    );
  }
  return sum;
}

/** a − b where the caller knows a ≥ b (a ledger invariant); a negative result is a bug. */
export function checkedSub(a: number, b: number): number {
  if (b > a) throw new BudgetAmountError(`budget underflow: ${a} − ${b} is negative`);
  return a - b;
}

export function addAmounts(a: Amount, b: Amount): Amount {
  return {
    tokens: checkedAdd(a.tokens, b.tokens),
    microUsd: checkedAdd(a.microUsd, b.microUsd),
  };
}

/**
 * True when `used` is at least `percent` % of `limit`. Computed in bigint because
 * used × 100 overflows the safe range long before `used` does.
 */
export function reachesPercent(used: number, limit: number, percent: number): boolean {
  if (limit === 0) return used > 0;
  return BigInt(used) * 100n >= BigInt(limit) * BigInt(percent);
}

function describe(value: unknown): string {
  if (typeof value === "number") return String(value);
  if (typeof value === "bigint") return `bigint ${value}`;
  if (typeof value === "string") return `string ${JSON.stringify(value)}`;
  return value === null ? "null" : typeof value;
}
