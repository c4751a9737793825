/**
 * What a workspace's `.astrid/config.toml` may do to each user setting. The workspace file
 * comes with the repository being worked on — written by someone else, and possibly by an
 * attacker — so it may only make things stricter:
 *
 * - `stricter`: the security mode may only move towards `safe`;
 * - `lower`: a limit may only shrink (budgets, warning threshold, approval timeout);
 * - `subset`: the enabled capsules may only be narrowed;
 * - `forbidden`: cannot be set at all. Providers (a `base_url` would send the user's API key
 *   to the repository author's server; a lower `price` would undercount the budget), bindings
 *   (a capsule slipped between orchestrator and provider sees every prompt), the default
 *   provider and model (where the prompts and code go, and what they cost), the kv store and
 *   the daemon (one per user, not per workspace).
 *
 * docs/config.md's table takes its "workspace" column from here.
 */

export type WorkspaceRule = "stricter" | "lower" | "subset" | "forbidden";

export const WORKSPACE_RULES: Readonly<Record<string, WorkspaceRule>> = Object.freeze({
  "defaults.mode": "stricter",
  "defaults.provider": "forbidden",
  "defaults.orchestrator": "forbidden",
  "defaults.model": "forbidden",
  "budget.session_usd": "lower",
  "budget.call_usd": "lower",
  "budget.session_tokens": "lower",
  "budget.call_tokens": "lower",
  "budget.warn_at_percent": "lower",
  "approvals.timeout_seconds": "lower",
  providers: "forbidden",
  bindings: "forbidden",
  "capsules.enabled": "subset",
  kv: "forbidden",
  daemon: "forbidden",
});

/** The rule of a dotted key: its own, or that of the nearest listed ancestor. */
export function workspaceRuleOf(key: string): WorkspaceRule {
  const parts = key.split(".");
  for (let n = parts.length; n > 0; n--) {
    const rule = WORKSPACE_RULES[parts.slice(0, n).join(".")];
    if (rule) return rule;
  }
  // A key no rule names cannot be reasoned about, so the workspace may not set it.
  return "forbidden";
}

export const WORKSPACE_RULE_TEXT: Readonly<Record<WorkspaceRule, string>> = Object.freeze({
  stricter: "stricter only",
  lower: "lower only",
  subset: "subset only",
  forbidden: "no",
});
