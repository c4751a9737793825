/**
 * Pure pieces of the approval bridge: the Approval object a bus request becomes, its name, and
 * whether an existing Approval (a GitOps pre-approval) already answers a request.
 */
import { createHash } from "node:crypto";
import type { ActionKind } from "../../core/security/approval/action.js";
import type { Approval } from "../api/approval.js";
import type { KubeObject, OwnerReference } from "../runtime/rest.js";

export const DEADLINE_ANNOTATION = "astrid.dev/deadline";
export const REQUEST_ID_ANNOTATION = "astrid.dev/request-id";
export const PRINCIPAL_ANNOTATION = "astrid.dev/principal";
export const SESSION_LABEL = "astrid.dev/session";
/** sha256 of the empty string: the argsHash of an action that has no arguments. */
export const EMPTY_ARGS_HASH = createHash("sha256").update("").digest("hex");

/** `<session>-<first 10 hex of sha256(requestId)>`: stable, so a repeated request finds its object. */
export function approvalName(session: string, requestId: string): string {
  return `${session}-${createHash("sha256").update(requestId).digest("hex").slice(0, 10)}`;
}

export interface ApprovalQuestion {
  namespace: string;
  session: string;
  sessionUid: string;
  capsule: string;
  principal: string;
  requestId: string;
  action: { kind: ActionKind; target: string; argsHash: string };
  reason: string;
  /** ms since the epoch. */
  deadline: number;
}

export function desiredApproval(q: ApprovalQuestion): KubeObject {
  // Not the controller: the Approval reconciler owns it; the reference only lets the garbage
  // collector remove a session's questions with the session.
  const owner: OwnerReference = {
    apiVersion: "astrid.dev/v1alpha1",
    kind: "AgentSession",
    name: q.session,
    uid: q.sessionUid,
  };
  return {
    apiVersion: "astrid.dev/v1alpha1",
    kind: "Approval",
    metadata: {
      name: approvalName(q.session, q.requestId),
      namespace: q.namespace,
      labels: { "app.kubernetes.io/part-of": "astrid", [SESSION_LABEL]: q.session },
      annotations: {
        [DEADLINE_ANNOTATION]: new Date(q.deadline).toISOString(),
        [REQUEST_ID_ANNOTATION]: q.requestId,
        [PRINCIPAL_ANNOTATION]: q.principal,
      },
      ownerReferences: [owner],
    },
    spec: { session: q.session, capsule: q.capsule, action: q.action, reason: q.reason },
  };
}

type ApprovalObject = Approval & KubeObject;

/**
 * A decided Approval for the same session, capsule and action (kind, target and argsHash):
 * the argsHash binds the answer to the exact arguments, so approving one call never approves
 * the same tool with others. Deny wins over allow when both exist.
 */
export function findPreApproval(
  approvals: readonly KubeObject[],
  q: Pick<ApprovalQuestion, "session" | "capsule" | "action">,
): ApprovalObject | undefined {
  const matches = (approvals as ApprovalObject[]).filter(
    (a) =>
      a.spec?.decision !== undefined &&
      !a.metadata.deletionTimestamp &&
      a.spec.session === q.session &&
      a.spec.capsule === q.capsule &&
      a.spec.action.kind === q.action.kind &&
      a.spec.action.target === q.action.target &&
      a.spec.action.argsHash === q.action.argsHash,
  );
  return matches.find((a) => a.spec.decision === "deny") ?? matches[0];
}
