/**
 * Layers 2, 4 and 5 for one host action: the manifest gate first (nothing widens it), then
 * the security mode's question whether a person must approve. Layer 4 acts here through the
 * approval store: an "allow always" answer is a capability token minted for exactly that
 * action, verified (expiry, revocation) on every lookup. The caller's own token is checked once
 * per request (sidecar.ts) and is deliberately NOT taken as consent for what the capsule then
 * does: a session's broad grant to call tools must not pre-approve a write or a command. Each
 * step is written to the audit chain before the next runs; budgets are charged per request.
 */
import { realpath } from "node:fs/promises";
import path from "node:path";
import { argsHash } from "../../core/security/approval/action.js";
import type { Approvals } from "../../core/security/approval/approvals.js";
import { newApprovalRequest } from "../../core/security/approval/request.js";
import type { Decision } from "../../core/security/decision.js";
import {
  approvalReason,
  needsApproval,
  type SecurityMode,
} from "../../core/security/modes/modes.js";
import type { Permission } from "../../core/security/tokens/claims.js";
import type { CallContext } from "../abi/host.js";
import type { DecisionLog } from "./decision-log.js";

export type HostActionKind = "fs_read" | "fs_write" | "net" | "process" | "tool";

export interface HostAction {
  readonly kind: HostActionKind;
  /** Path, host:port, command or tool name, as the audit and the approval prompt show it. */
  readonly target: string;
  /** Hashed into the audit entry and, for process and tool, bound into approvals. */
  readonly args?: unknown;
  /** The audit action name, e.g. "fs.read". */
  readonly audit: string;
  /** The manifest gate's answer for this action. */
  readonly gate: () => Decision | Promise<Decision>;
  /** Token resource, e.g. "fs:/work/a.txt", "net:api.example.com:443", "process:git". */
  readonly resource: string;
  readonly permission: Permission;
}

export interface LayersOptions {
  readonly log: DecisionLog;
  readonly approvals: Approvals;
  readonly mode: SecurityMode;
  /** `--yes`: approvals answered as in autonomous mode; nothing else changes. */
  readonly yes: boolean;
  readonly workspace: string;
  readonly approvalTimeoutMs: number;
}

export class CapsuleLayers {
  private workspaceReal: Promise<string> | undefined;

  constructor(private readonly o: LayersOptions) {}

  get mode(): SecurityMode {
    return this.o.mode;
  }

  async authorize(ctx: CallContext, action: HostAction): Promise<Decision> {
    const who = ctx;
    const gate = await this.o.log.record(
      who,
      await action.gate(),
      action.audit,
      action.target,
      action.args,
    );
    if (!gate.allowed) return gate;

    const modeAction =
      action.kind === "fs_read" || action.kind === "fs_write"
        ? { kind: action.kind, inWorkspace: await this.inWorkspace(action.target) }
        : { kind: action.kind };
    if (!needsApproval(this.o.mode, modeAction, { yes: this.o.yes })) return gate;

    const request = newApprovalRequest({
      session: ctx.session,
      principal: ctx.principal,
      capsule: ctx.capsule,
      action: { kind: action.kind, target: action.target, argsHash: argsHash(action.args ?? null) },
      reason: approvalReason(this.o.mode, modeAction),
      workspace: this.o.workspace,
      timeoutMs: Math.max(1, Math.min(this.o.approvalTimeoutMs, ctx.deadline - Date.now())),
    });
    const { decision } = await this.o.approvals.authorize(request);
    return this.o.log.record(who, decision, "approval.decided", action.target, action.args);
  }

  /** Where a path really lies decides which row of the mode table applies. */
  private async inWorkspace(p: string): Promise<boolean> {
    this.workspaceReal ??= realpath(this.o.workspace);
    const root = await this.workspaceReal;
    let real: string;
    try {
      real = await realpath(p);
    } catch {
      try {
        real = path.join(await realpath(path.dirname(p)), path.basename(p));
      } catch {
        return false; // unknown location counts as outside
      }
    }
    return real === root || real.startsWith(`${root}/`);
  }
}
