/**
 * Questions the rest of the system asks about a session's mode. All answers come from
 * MODE_TABLE; none of these functions can answer anything about the sandbox, gate, ACL or
 * tokens, which every mode leaves on.
 */
import {
  ACTION_CLASS_LABELS,
  type ActionClass,
  actionClass,
  type BudgetEnforcement,
  MODE_TABLE,
  type ModeAction,
  type ModePolicy,
  SECURITY_MODES,
  type SecurityMode,
} from "./policy-table.js";

export interface ModeOptions {
  /**
   * `--yes`: answer approvals as autonomous would, for approvals only. Budget enforcement
   * stays that of the session's mode — `--yes` is "don't ask me", not "don't count".
   */
  readonly yes?: boolean;
}

export class SecurityModeError extends Error {
  override readonly name = "SecurityModeError";
}

export function parseSecurityMode(input: unknown): SecurityMode {
  if (typeof input === "string" && (SECURITY_MODES as readonly string[]).includes(input)) {
    return input as SecurityMode;
  }
  throw new SecurityModeError(
    `unknown security mode ${JSON.stringify(input)}; expected one of ${SECURITY_MODES.join(", ")}`,
  );
}

/** The policy a session runs under, with `--yes` applied. */
export function sessionPolicy(mode: SecurityMode, opts: ModeOptions = {}): ModePolicy {
  const own = policyOf(mode);
  if (!opts.yes) return own;
  return Object.freeze({ approvals: MODE_TABLE.autonomous.approvals, budget: own.budget });
}

export function needsApproval(
  mode: SecurityMode,
  action: ModeAction,
  opts: ModeOptions = {},
): boolean {
  return sessionPolicy(mode, opts).approvals[actionClass(action)] === "ask";
}

export function budgetEnforcement(mode: SecurityMode): BudgetEnforcement {
  return policyOf(mode).budget;
}

/** The reason shown in an approval request, e.g. "guided mode: fs_write inside the workspace asks". */
export function approvalReason(mode: SecurityMode, action: ModeAction): string {
  return `${mode} mode: ${ACTION_CLASS_LABELS[actionClass(action)]} asks`;
}

export type { ActionClass, ModeAction, ModePolicy, SecurityMode };

function policyOf(mode: SecurityMode): ModePolicy {
  // Modes arrive from flags and CRDs: an unknown one is an error, never a default.
  return MODE_TABLE[parseSecurityMode(mode)];
}
