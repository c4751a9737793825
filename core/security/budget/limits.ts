/**
 * Budget limits of one session. The schema is the single source of truth: the same object
 * validates the limits an AgentSession or CLI flag supplies and gives the type.
 *
 * Every limit is required. A missing limit is not read as "unlimited": a typo in a config key
 * must not silently remove the cap (fail closed). Whoever truly wants no cap writes
 * Number.MAX_SAFE_INTEGER and it shows in review.
 */
import { z } from "zod";

// zod's int() is bounded to the safe-integer range (≤ 2^53 − 1), which is what amount.ts needs.
const amount = z.number().int().min(0);

const currencyLimits = z.strictObject({
  /** Most one call may reserve. */
  perCall: amount,
  /** Most the whole session may spend (settled + reserved). */
  session: amount,
});

export const budgetLimitsSchema = z.strictObject({
  tokens: currencyLimits,
  microUsd: currencyLimits,
  /** Percent of a session limit at which a warning event fires (once per crossing). */
  warnPercent: z.number().int().min(1).max(100).default(80),
  /**
   * yolo turns limit breaches into warnings: the call goes ahead, the breach is still written
   * to the journal and emitted as an event so it shows up in metrics and the audit.
   */
  yolo: z.boolean().default(false),
});

export type BudgetLimits = z.output<typeof budgetLimitsSchema>;
export type BudgetLimitsInput = z.input<typeof budgetLimitsSchema>;

export class BudgetLimitsError extends Error {
  override readonly name = "BudgetLimitsError";
}

export function parseBudgetLimits(input: unknown): BudgetLimits {
  const r = budgetLimitsSchema.safeParse(input);
  if (r.success) return r.data;
  const first = r.error.issues[0]!;
  const at = first.path.length > 0 ? first.path.join(".") : "(root)";
  throw new BudgetLimitsError(`invalid budget limits at ${at}: ${first.message}`);
}
