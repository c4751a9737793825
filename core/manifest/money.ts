/**
 * Budget amounts are written as decimal USD strings and held as integer micro-dollars. Floats
 * would make "0.1 + 0.2" reservations drift; integers in a safe range add and compare exactly.
 */

export const MICRO_PER_USD = 1_000_000;

const DECIMAL = /^(0|[1-9][0-9]*)(\.[0-9]{1,6})?$/;

/**
 * "5.00" → 5_000_000. Returns a description of what was expected when `text` is not a
 * non-negative decimal with at most 6 decimals that fits in a safe integer of micro-dollars.
 */
export function usdToMicro(
  text: string,
): { ok: true; micro: number } | { ok: false; error: string } {
  const m = DECIMAL.exec(text);
  if (!m) {
    return {
      ok: false,
      error: `expected a decimal USD amount with at most 6 decimals like "5.00", got ${JSON.stringify(text)}`,
    };
  }
  const whole = BigInt(m[1] ?? "0");
  const fraction = BigInt((m[2] ?? ".").slice(1).padEnd(6, "0"));
  const micro = whole * BigInt(MICRO_PER_USD) + fraction;
  if (micro > BigInt(Number.MAX_SAFE_INTEGER)) {
    return {
      ok: false,
      error: `expected an amount below 9007199254.740991 USD, got ${JSON.stringify(text)}`,
    };
  }
  return { ok: true, micro: Number(micro) };
}
