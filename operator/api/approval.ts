/**
 * Approval: a question the approval layer asks a person, answered with kubectl (edit
 * spec.decision) or created already decided by GitOps (a pre-approval).
 */
import { z } from "zod";
import { ACTION_KINDS } from "../../core/security/approval/action.js";
import { APPROVAL_DECISIONS } from "../../core/security/approval/request.js";
import {
  API_VERSION,
  celRules,
  conditionList,
  count,
  objectMetaSchema,
  objectName,
} from "./common.js";

export const APPROVAL_CONDITIONS = ["Ready"] as const;
export const APPROVAL_STATES = ["Pending", "Decided", "Expired"] as const;

export const DECISION_IMMUTABLE_MESSAGE = "decision is immutable once set";
export const DECIDED_BY_IMMUTABLE_MESSAGE = "decidedBy is immutable once set";
export const DECIDED_BY_REQUIRED_MESSAGE = "decidedBy is required when decision is set";
export const QUESTION_IMMUTABLE_MESSAGE = "session, capsule, action and reason are immutable";

export const approvalSpecSchema = z
  .strictObject({
    session: objectName.describe("The AgentSession that asks"),
    capsule: objectName.describe("The capsule whose call waits"),
    action: z.strictObject({
      kind: z.enum(ACTION_KINDS),
      target: z.string().min(1).max(4096).describe("tool name, path, host:port, command…"),
      argsHash: z
        .string()
        .regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex characters (sha256)")
        .describe("sha256 of the canonical JSON of the call's arguments"),
    }),
    reason: z.string().max(4096).describe("Why the capsule asks, as shown to the person"),
    decision: z.enum(APPROVAL_DECISIONS).optional(),
    decidedBy: z.string().min(1).max(256).optional().describe("Who decided (audit)"),
  })
  .meta(
    celRules(
      // An answer is consent to what was shown: it must not be rewritten after the sidecar may
      // have acted on it, and the question must not change under an answer.
      {
        rule: "!has(oldSelf.decision) || (has(self.decision) && self.decision == oldSelf.decision)",
        message: DECISION_IMMUTABLE_MESSAGE,
        fieldPath: ".decision",
      },
      {
        rule: "!has(oldSelf.decidedBy) || (has(self.decidedBy) && self.decidedBy == oldSelf.decidedBy)",
        message: DECIDED_BY_IMMUTABLE_MESSAGE,
        fieldPath: ".decidedBy",
      },
      {
        rule: "self.session == oldSelf.session && self.capsule == oldSelf.capsule && self.action == oldSelf.action && self.reason == oldSelf.reason",
        message: QUESTION_IMMUTABLE_MESSAGE,
      },
      // An anonymous answer could not be audited.
      { rule: "!has(self.decision) || has(self.decidedBy)", message: DECIDED_BY_REQUIRED_MESSAGE },
    ),
  )
  .superRefine((s, ctx) => {
    if (s.decision !== undefined && s.decidedBy === undefined) {
      ctx.addIssue({ code: "custom", message: DECIDED_BY_REQUIRED_MESSAGE, path: ["decidedBy"] });
    }
  });

export const approvalStatusSchema = z.strictObject({
  state: z.enum(APPROVAL_STATES).optional(),
  conditions: conditionList(APPROVAL_CONDITIONS).optional(),
  observedGeneration: count.optional(),
});

export const approvalSchema = z.strictObject({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal("Approval"),
  metadata: objectMetaSchema,
  spec: approvalSpecSchema,
  status: approvalStatusSchema.optional(),
});

export type ApprovalSpec = z.output<typeof approvalSpecSchema>;
export type ApprovalStatus = z.output<typeof approvalStatusSchema>;
export type Approval = z.output<typeof approvalSchema>;
