/**
 * Lasting answers to approval requests, looked up before a person is asked again.
 *
 *   allow_once       nothing is stored; only the call that asked proceeds.
 *   allow_session    kept in memory for the session; endSession() drops them.
 *   allow_workspace  persisted, keyed by the workspace path.
 *   allow_always     a capability token minted (injected mintToken) for exactly that action,
 *                    persisted; checked (injected checkToken) on every lookup so revocation
 *                    and expiry of the token end the grant.
 *   deny             nothing is stored: the answer has no scope, and a person who denied a call
 *                    with wrong arguments must be able to approve the corrected retry.
 *
 * Every grant is bound to the principal and capsule that asked and matches the action exactly:
 * kind + target, and for `tool` and `process` also the arguments' hash. No prefixes, no globs —
 * a session grant for fs_write /a/b covers /a/b only, not /a/b/c, /a/bc or /a/b/../../etc. A
 * grant is consent to what the person saw; widening it would let a prompt-injected agent reuse
 * one harmless-looking approval for a different file or command. Wider, reviewed permissions
 * belong in the manifest (layer 2) or in a capability token (layer 4). fs and net grants leave
 * the arguments out because for them the target is the resource (the written bytes or request
 * body are not what a person approves a path or host for); a tool or command with other
 * arguments is a different action.
 */
import path from "node:path";
import { canonicalJson } from "../../canonical-json.js";
import { type ActionKind, type ApprovalAction, approvalActionSchema } from "./action.js";
import {
  type AlwaysGrant,
  type GrantFile,
  readGrantFile,
  type WorkspaceGrant,
  writeGrantFile,
} from "./grant-file.js";
import type { ApprovalAnswer, ApprovalRequest } from "./request.js";

export type { AlwaysGrant, WorkspaceGrant } from "./grant-file.js";

export interface SessionGrant {
  readonly scope: "session";
  readonly session: string;
  readonly principal: string;
  readonly capsule: string;
  readonly action: ApprovalAction;
  readonly grantedBy: string;
  readonly grantedAt: number;
  readonly requestId: string;
}

export type Grant = SessionGrant | WorkspaceGrant | AlwaysGrant;

/** Who asks and where: a grant only ever answers the same principal and capsule. */
export interface GrantContext {
  readonly session: string;
  readonly principal: string;
  readonly capsule: string;
  /** Absolute workspace path, if the session has one. */
  readonly workspace?: string;
}

/** What an allow_always token must grant; the token layer turns it into its own claims. */
export interface AlwaysGrantClaims {
  readonly principal: string;
  readonly capsule: string;
  readonly kind: ActionKind;
  /** Resource in the token grammar: "tool:<name>", "fs:<path>", "net:<host:port>", ... */
  readonly resource: string;
  /** Set for tool and process grants, which are bound to their arguments. */
  readonly argsHash: string | null;
}

export type MintToken = (claims: AlwaysGrantClaims) => Promise<string>;
/** True only if the token is authentic, unexpired, unrevoked and grants exactly `claims`. */
export type CheckToken = (token: string, claims: AlwaysGrantClaims) => Promise<boolean>;

export interface ApprovalStoreOptions {
  /** JSON file for workspace and always grants. */
  readonly file: string;
  readonly mintToken: MintToken;
  readonly checkToken: CheckToken;
}

export class ApprovalStoreError extends Error {
  override readonly name = "ApprovalStoreError";
}

const ARGS_BOUND: ReadonlySet<ActionKind> = new Set(["tool", "process"]);

const RESOURCE_PREFIX: Record<ActionKind, string> = {
  fs_read: "fs",
  fs_write: "fs",
  net: "net",
  process: "process",
  tool: "tool",
  capsule_install: "capsule",
};

export function alwaysGrantClaims(
  principal: string,
  capsule: string,
  action: ApprovalAction,
): AlwaysGrantClaims {
  return {
    principal,
    capsule,
    kind: action.kind,
    resource: `${RESOURCE_PREFIX[action.kind]}:${action.target}`,
    argsHash: ARGS_BOUND.has(action.kind) ? action.argsHash : null,
  };
}

/** The exact-match key of a grant: principal, capsule, kind, target and (tool/process) args. */
export function grantKey(principal: string, capsule: string, action: ApprovalAction): string {
  return canonicalJson([
    principal,
    capsule,
    action.kind,
    action.target,
    ARGS_BOUND.has(action.kind) ? action.argsHash : null,
  ]);
}

function normaliseWorkspace(ws: string): string {
  if (!path.isAbsolute(ws)) {
    throw new ApprovalStoreError(`workspace must be an absolute path, got ${JSON.stringify(ws)}`);
  }
  return path.resolve(ws);
}

export class ApprovalStore {
  private readonly sessions = new Map<string, Map<string, SessionGrant>>();
  private workspace = new Map<string, WorkspaceGrant>();
  private always = new Map<string, AlwaysGrant>();
  /** Serialises file writes so two grants recorded at once cannot overwrite each other. */
  private writing: Promise<void> = Promise.resolve();

  private constructor(private readonly opts: ApprovalStoreOptions) {}

  static async open(opts: ApprovalStoreOptions): Promise<ApprovalStore> {
    const store = new ApprovalStore(opts);
    store.adopt(await readGrantFile(opts.file));
    return store;
  }

  /**
   * The grant file is the truth for lasting grants: several stores (one per capsule sidecar,
   * per session) share it, so each lookup reads it again and each change is applied to what is
   * on disk now, not to this store's older copy.
   */
  private adopt(content: GrantFile): void {
    const workspace = new Map<string, WorkspaceGrant>();
    for (const g of content.workspace) {
      workspace.set(workspaceKey(g.workspace, grantKey(g.principal, g.capsule, g.action)), g);
    }
    const always = new Map<string, AlwaysGrant>();
    for (const g of content.always) always.set(grantKey(g.principal, g.capsule, g.action), g);
    this.workspace = workspace;
    this.always = always;
  }

  /** An existing grant for this exact action, checked before a person is asked. */
  async lookup(action: ApprovalAction, ctx: GrantContext): Promise<Grant | null> {
    const parsed = approvalActionSchema.safeParse(action);
    if (!parsed.success) {
      const first = parsed.error.issues[0]!;
      throw new ApprovalStoreError(`invalid action at ${first.path.join(".")}: ${first.message}`);
    }
    const a = parsed.data;
    const key = grantKey(ctx.principal, ctx.capsule, a);
    const s = this.sessions.get(ctx.session)?.get(key);
    if (s) return s;
    await this.writing;
    this.adopt(await readGrantFile(this.opts.file));
    if (ctx.workspace !== undefined) {
      const w = this.workspace.get(workspaceKey(normaliseWorkspace(ctx.workspace), key));
      if (w) return w;
    }
    const g = this.always.get(key);
    if (!g) return null;
    let valid = false;
    try {
      valid = await this.opts.checkToken(
        g.token,
        alwaysGrantClaims(g.principal, g.capsule, g.action),
      );
    } catch {
      // Cannot tell (revocation list unreachable…): not valid now, but keep it for later.
      return null;
    }
    if (valid) return g;
    // Revoked or expired: the grant ends with its token.
    await this.mutate((_w, always) => {
      if (always.get(key)?.token === g.token) always.delete(key);
    });
    return null;
  }

  /** Stores what the answer grants beyond the current call; null when it grants nothing. */
  async record(request: ApprovalRequest, answer: ApprovalAnswer): Promise<Grant | null> {
    const base = {
      principal: request.principal,
      capsule: request.capsule,
      action: request.action,
      grantedBy: answer.decidedBy,
      grantedAt: answer.decidedAt,
      requestId: request.id,
    };
    const key = grantKey(request.principal, request.capsule, request.action);
    switch (answer.decision) {
      case "allow_once":
      case "deny":
        return null;
      case "allow_session": {
        const grant: SessionGrant = { scope: "session", session: request.session, ...base };
        const m = this.sessions.get(request.session) ?? new Map<string, SessionGrant>();
        m.set(key, grant);
        this.sessions.set(request.session, m);
        return grant;
      }
      case "allow_workspace": {
        if (request.workspace === undefined) {
          throw new ApprovalStoreError(
            `allow_workspace needs a workspace, but approval request "${request.id}" has none`,
          );
        }
        const workspace = normaliseWorkspace(request.workspace);
        const grant: WorkspaceGrant = { scope: "workspace", workspace, ...base };
        await this.mutate((w) => w.set(workspaceKey(workspace, key), grant));
        return grant;
      }
      case "allow_always": {
        const token = await this.opts.mintToken(
          alwaysGrantClaims(request.principal, request.capsule, request.action),
        );
        const grant: AlwaysGrant = { scope: "always", token, ...base };
        await this.mutate((_w, always) => always.set(key, grant));
        return grant;
      }
    }
  }

  /** Drops the session's grants; returns how many there were. */
  endSession(session: string): number {
    const n = this.sessions.get(session)?.size ?? 0;
    this.sessions.delete(session);
    return n;
  }

  /** Every grant currently held (for a UI listing or `astrid approvals list`). */
  grants(): Grant[] {
    const out: Grant[] = [];
    for (const m of this.sessions.values()) out.push(...m.values());
    out.push(...this.workspace.values(), ...this.always.values());
    return out;
  }

  /** Applies a change to the grant file as it is on disk now, one change at a time. */
  private mutate(
    change: (workspace: Map<string, WorkspaceGrant>, always: Map<string, AlwaysGrant>) => void,
  ): Promise<void> {
    const next = this.writing.then(async () => {
      this.adopt(await readGrantFile(this.opts.file));
      change(this.workspace, this.always);
      await writeGrantFile(this.opts.file, {
        version: 1,
        workspace: [...this.workspace.values()],
        always: [...this.always.values()],
      });
    });
    this.writing = next.catch(() => {});
    return next;
  }
}

function workspaceKey(workspace: string, key: string): string {
  return `${workspace}\u0000${key}`;
}
