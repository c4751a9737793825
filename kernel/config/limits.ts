/**
 * The budget limits a session runs under, in the form core/security/budget takes. USD amounts
 * become integer micro-dollars here, and the mode decides whether a breach denies or warns, so
 * the ledger never sees the config's text. `mode` is the session's (a CLI flag may pick a
 * stricter one than the default).
 */
import { usdToMicro } from "../../core/manifest/money.js";
import { type BudgetLimits, parseBudgetLimits } from "../../core/security/budget/limits.js";
import { budgetEnforcement, type SecurityMode } from "../../core/security/modes/modes.js";
import type { AstridConfig } from "./schema.js";

function micro(usd: string): number {
  const r = usdToMicro(usd);
  if (!r.ok) throw new Error(`unvalidated USD amount reached the budget: ${r.error}`);
  return r.micro;
}

export function budgetLimitsOf(
  config: AstridConfig,
  mode: SecurityMode = config.defaults.mode,
): BudgetLimits {
  const b = config.budget;
  return parseBudgetLimits({
    tokens: { perCall: b.call_tokens, session: b.session_tokens },
    microUsd: { perCall: micro(b.call_usd), session: micro(b.session_usd) },
    warnPercent: b.warn_at_percent,
    yolo: budgetEnforcement(mode) === "warn",
  });
}
