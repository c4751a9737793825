/**
 * The effective config of a session: the user's config, tightened by the workspace's
 * `.astrid/config.toml`. The workspace file arrives with the repository — possibly from an
 * attacker — so it can never make anything looser than the user's own file (rules and reasons
 * in workspace-rules.ts).
 *
 * A workspace value looser than the user's is not an error but is not applied either: a shared
 * repository config is written for many users with different personal limits, and a user whose
 * own limits are lower must still be able to work in it. Each such value becomes a notice the
 * CLI shows. Setting a key the workspace may not touch at all is an error.
 */
import { usdToMicro } from "../../core/manifest/money.js";
import type { SecurityMode } from "../../core/security/modes/policy-table.js";
import { ConfigError, type ConfigIssue } from "./errors.js";
import type { ConfigFile } from "./load.js";
import type { AstridConfig } from "./schema.js";
import { workspaceRuleOf } from "./workspace-rules.js";

/** Loosest first. Tested against the mode table: each mode asks at least what the one before does. */
export const MODES_BY_STRICTNESS: readonly SecurityMode[] = Object.freeze([
  "yolo",
  "autonomous",
  "guided",
  "safe",
]);

export function modeStrictness(mode: SecurityMode): number {
  return MODES_BY_STRICTNESS.indexOf(mode);
}

export interface EffectiveConfig {
  readonly config: AstridConfig;
  /** Workspace values that were looser than the user's and therefore not applied. */
  readonly notices: readonly string[];
}

type Tree = Record<string, unknown>;

const isTable = (v: unknown): v is Tree =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);

/**
 * Dotted paths of every value written in the file (arrays count as one value). An empty table
 * sets nothing, except under a forbidden key: `[providers.evil]` alone is still an attempt.
 */
function writtenLeaves(tree: Tree, prefix: string[] = []): string[][] {
  const out: string[][] = [];
  for (const [k, v] of Object.entries(tree)) {
    const path = [...prefix, k];
    if (!isTable(v)) out.push(path);
    else if (Object.keys(v).length > 0) out.push(...writtenLeaves(v, path));
    else if (workspaceRuleOf(path.join(".")) === "forbidden" && prefix.length > 0) out.push(path);
  }
  return out;
}

const micro = (usd: string): number => {
  const r = usdToMicro(usd);
  // Both files were validated; an amount that no longer parses is a bug, not a user error.
  if (!r.ok) throw new Error(`unvalidated USD amount reached the merge: ${r.error}`);
  return r.micro;
};

export function effectiveConfig(user: ConfigFile, workspace?: ConfigFile): EffectiveConfig {
  if (!workspace?.exists) return { config: user.config, notices: [] };
  const u = user.config;
  const w = workspace.config;
  const issues: ConfigIssue[] = [];
  const notices: string[] = [];
  const config: AstridConfig = structuredClone(u);

  const looser = (path: string[], asked: unknown, kept: unknown): void => {
    notices.push(
      `${workspace.sourceOf(path)}: ${path.join(".")}: workspace asks for ${JSON.stringify(asked)}, looser than the user's ${JSON.stringify(kept)}; keeping ${JSON.stringify(kept)}`,
    );
  };

  for (const path of writtenLeaves(workspace.written)) {
    const key = path.join(".");
    const rule = workspaceRuleOf(key);
    if (rule === "forbidden") {
      issues.push({
        source: workspace.sourceOf(path),
        field: key,
        message: `workspace config may only tighten the user's: ${key} cannot be set here`,
      });
      continue;
    }
    switch (key) {
      case "defaults.mode":
        if (modeStrictness(w.defaults.mode) >= modeStrictness(u.defaults.mode)) {
          config.defaults.mode = w.defaults.mode;
        } else looser(path, w.defaults.mode, u.defaults.mode);
        break;
      case "budget.session_usd":
      case "budget.call_usd": {
        const field = path[1] as "session_usd" | "call_usd";
        if (micro(w.budget[field]) <= micro(u.budget[field]))
          config.budget[field] = w.budget[field];
        else looser(path, w.budget[field], u.budget[field]);
        break;
      }
      case "budget.session_tokens":
      case "budget.call_tokens":
      case "budget.warn_at_percent": {
        const field = path[1] as "session_tokens" | "call_tokens" | "warn_at_percent";
        if (w.budget[field] <= u.budget[field]) config.budget[field] = w.budget[field];
        else looser(path, w.budget[field], u.budget[field]);
        break;
      }
      case "approvals.timeout_seconds":
        if (w.approvals.timeout_seconds <= u.approvals.timeout_seconds) {
          config.approvals.timeout_seconds = w.approvals.timeout_seconds;
        } else looser(path, w.approvals.timeout_seconds, u.approvals.timeout_seconds);
        break;
      case "capsules.enabled": {
        const asked = [...new Set(w.capsules.enabled ?? [])];
        const allowed = u.capsules.enabled;
        // The user's list unset means every installed capsule: any list narrows it.
        const kept = allowed === undefined ? asked : asked.filter((c) => allowed.includes(c));
        const dropped = asked.filter((c) => !kept.includes(c));
        if (dropped.length > 0) {
          notices.push(
            `${workspace.sourceOf(path)}: capsules.enabled: ${dropped.map((c) => JSON.stringify(c)).join(", ")} not enabled in the user's config; a workspace may only narrow the list, so left out`,
          );
        }
        config.capsules.enabled = kept;
        break;
      }
      default:
        // A rule exists but this merge does not know the key: refuse rather than ignore it.
        issues.push({
          source: workspace.sourceOf(path),
          field: key,
          message: `workspace config may only tighten the user's: ${key} cannot be set here`,
        });
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return { config, notices };
}
