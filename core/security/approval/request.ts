/**
 * An approval request and the answers a person can give. Requests arrive from sidecars over
 * the bus and answers from a UI, kubectl or GitOps, so both are validated by schema at the
 * boundary rather than trusted as typed.
 */
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { type ApprovalAction, approvalActionSchema } from "./action.js";

export const APPROVAL_DECISIONS = [
  "allow_once",
  "allow_session",
  "allow_workspace",
  "allow_always",
  "deny",
] as const;

export type ApprovalDecision = (typeof APPROVAL_DECISIONS)[number];

export const approvalDecisionSchema = z.enum(APPROVAL_DECISIONS);

const name = z.string().min(1).max(256);

export const approvalRequestSchema = z
  .strictObject({
    id: name,
    session: name,
    principal: name,
    capsule: name,
    action: approvalActionSchema,
    /** Why the call needs a person (e.g. "guided mode: fs_write inside the workspace asks"). */
    reason: z.string().max(2048),
    /** Absolute workspace path of the session, when it has one (allow_workspace keys on it). */
    workspace: z.string().startsWith("/").optional(),
    createdAt: z.number().int().min(0),
    deadline: z.number().int().min(0),
  })
  .refine((r) => r.deadline > r.createdAt, {
    message: "deadline must be after createdAt",
    path: ["deadline"],
  });

export type ApprovalRequest = z.output<typeof approvalRequestSchema>;

/** The answer to a request, with who gave it and when (for the audit). */
export interface ApprovalAnswer {
  readonly decision: ApprovalDecision;
  /** Who decided: a user id, "timeout", or "no-approver" for the automatic denials. */
  readonly decidedBy: string;
  readonly decidedAt: number;
}

export class ApprovalRequestError extends Error {
  override readonly name = "ApprovalRequestError";
}

export function parseApprovalRequest(input: unknown): ApprovalRequest {
  const r = approvalRequestSchema.safeParse(input);
  if (r.success) return r.data;
  const first = r.error.issues[0]!;
  const at = first.path.length > 0 ? first.path.join(".") : "(root)";
  throw new ApprovalRequestError(`invalid approval request at ${at}: ${first.message}`);
}

export interface NewApprovalRequest {
  readonly session: string;
  readonly principal: string;
  readonly capsule: string;
  readonly action: ApprovalAction;
  readonly reason: string;
  readonly workspace?: string;
  /** How long a person has to answer before it counts as deny. */
  readonly timeoutMs: number;
  readonly now?: number;
}

/** A fresh request with a random id and its deadline. */
export function newApprovalRequest(n: NewApprovalRequest): ApprovalRequest {
  const createdAt = n.now ?? Date.now();
  return parseApprovalRequest({
    id: randomUUID(),
    session: n.session,
    principal: n.principal,
    capsule: n.capsule,
    action: n.action,
    reason: n.reason,
    ...(n.workspace !== undefined ? { workspace: n.workspace } : {}),
    createdAt,
    deadline: createdAt + n.timeoutMs,
  });
}
