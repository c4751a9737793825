/**
 * The security modes as data: one row per mode, saying for each class of action whether it
 * runs ("allow") or waits for a person ("ask"), and whether budget limits deny ("enforce") or
 * only warn. The docs table is generated from this object (modeTableMarkdown), so the code and
 * docs/security.md cannot disagree.
 *
 * What is not here matters as much: there is no column for the sandbox, the manifest gate, the
 * IPC ACL or capability tokens. A mode cannot switch them off because the table has nowhere to
 * say so — not because some branch remembers to ignore a flag.
 *
 * Decisions:
 * - safe asks for every write, even inside the workspace. The seed only says "everything
 *   outside the workspace asks"; that is a lower bound. A mode called safe that allowed what
 *   guided asks would surprise, so safe is at least as strict as guided on every row (tested).
 * - guided: "reads pass, writes ask". net, process, tool calls and installs count as writes:
 *   a request can carry data out in its URL, a command or tool can do anything.
 * - autonomous and yolo never ask; yolo also turns budget breaches into warnings.
 */
import type { ActionKind } from "../approval/action.js";

export const SECURITY_MODES = ["safe", "guided", "autonomous", "yolo"] as const;
export type SecurityMode = (typeof SECURITY_MODES)[number];

/** Action kinds, with file access split by where the path is relative to the workspace. */
export const ACTION_CLASSES = [
  "fs_read_workspace",
  "fs_read_outside",
  "fs_write_workspace",
  "fs_write_outside",
  "net",
  "process",
  "tool",
  "capsule_install",
] as const;
export type ActionClass = (typeof ACTION_CLASSES)[number];

export type ApprovalPolicy = "allow" | "ask";
export type BudgetEnforcement = "enforce" | "warn";

/** Everything a mode can decide. Deliberately nothing about layers 1–4. */
export interface ModePolicy {
  readonly approvals: Readonly<Record<ActionClass, ApprovalPolicy>>;
  readonly budget: BudgetEnforcement;
}

export const ACTION_CLASS_LABELS: Readonly<Record<ActionClass, string>> = Object.freeze({
  fs_read_workspace: "fs_read inside the workspace",
  fs_read_outside: "fs_read outside the workspace",
  fs_write_workspace: "fs_write inside the workspace",
  fs_write_outside: "fs_write outside the workspace",
  net: "net (outbound connection)",
  process: "process (host command)",
  tool: "tool call",
  capsule_install: "capsule install",
});

function row(
  approvals: Record<ActionClass, ApprovalPolicy>,
  budget: BudgetEnforcement,
): ModePolicy {
  return Object.freeze({ approvals: Object.freeze(approvals), budget });
}

const ALL_ALLOW: Record<ActionClass, ApprovalPolicy> = {
  fs_read_workspace: "allow",
  fs_read_outside: "allow",
  fs_write_workspace: "allow",
  fs_write_outside: "allow",
  net: "allow",
  process: "allow",
  tool: "allow",
  capsule_install: "allow",
};

export const MODE_TABLE: Readonly<Record<SecurityMode, ModePolicy>> = Object.freeze({
  safe: row(
    {
      fs_read_workspace: "allow",
      fs_read_outside: "ask",
      fs_write_workspace: "ask",
      fs_write_outside: "ask",
      net: "ask",
      process: "ask",
      tool: "ask",
      capsule_install: "ask",
    },
    "enforce",
  ),
  guided: row(
    {
      fs_read_workspace: "allow",
      fs_read_outside: "allow",
      fs_write_workspace: "ask",
      fs_write_outside: "ask",
      net: "ask",
      process: "ask",
      tool: "ask",
      capsule_install: "ask",
    },
    "enforce",
  ),
  autonomous: row({ ...ALL_ALLOW }, "enforce"),
  yolo: row({ ...ALL_ALLOW }, "warn"),
});

/** The action as the mode table needs it: its kind, and for files where the path lies. */
export type ModeAction =
  | { readonly kind: "fs_read" | "fs_write"; readonly inWorkspace: boolean }
  | { readonly kind: Exclude<ActionKind, "fs_read" | "fs_write"> };

export function actionClass(action: ModeAction): ActionClass {
  switch (action.kind) {
    case "fs_read":
    case "fs_write":
      // Only an explicit true counts as inside: an unknown location is treated as outside.
      return `${action.kind}_${action.inWorkspace === true ? "workspace" : "outside"}`;
    default:
      return action.kind;
  }
}
