/**
 * AgentSession: one agent run — the task, the capsules wired together for it, the security
 * mode, the budget and the principal it acts for. Status reports usage and the result.
 */
import { z } from "zod";
import { usdToMicro } from "../../core/manifest/money.js";
import { SECURITY_MODES } from "../../core/security/modes/policy-table.js";
import {
  API_VERSION,
  celRules,
  conditionList,
  count,
  int64String,
  objectMetaSchema,
  objectName,
  usdAmount,
} from "./common.js";

export const AGENT_SESSION_CONDITIONS = [
  "Accepted",
  "Running",
  "Succeeded",
  "Failed",
  "Ready",
  "TokenRevoked",
] as const;

export const ORCHESTRATOR_MESSAGE = "orchestrator must be one of capsules";
export const BINDINGS_MESSAGE = "every importer and exporter in bindings must be one of capsules";
export const CALL_TOKENS_MESSAGE = "maxCallTokens must be at most maxSessionTokens";
export const CALL_USD_MESSAGE = "maxCallUsd must be at most maxSessionUsd";
export const PRINCIPAL_IMMUTABLE_MESSAGE = "principal is immutable";

// Decision: token limits are JSON integers (core/security/budget holds them as safe
// integers, and a person writes `200000`, not `"200000"`); money is a decimal string because
// it is not an integer at all and must never pass through a float.
export const budgetSchema = z
  .strictObject({
    maxSessionUsd: usdAmount.describe("Most the whole session may spend, in USD"),
    maxCallUsd: usdAmount.describe("Most one model or tool call may reserve, in USD"),
    maxSessionTokens: count.min(1).describe("Most tokens the whole session may use"),
    maxCallTokens: count.min(1).describe("Most tokens one call may reserve"),
  })
  .meta(
    celRules(
      { rule: "self.maxCallTokens <= self.maxSessionTokens", message: CALL_TOKENS_MESSAGE },
      // quantity() parses the decimal exactly (no float), so "0.30" <= "0.3" compares right;
      // a malformed amount is left to its own rule rather than failing this one at runtime.
      {
        rule: "!isQuantity(self.maxCallUsd) || !isQuantity(self.maxSessionUsd) || quantity(self.maxCallUsd).compareTo(quantity(self.maxSessionUsd)) <= 0",
        message: CALL_USD_MESSAGE,
      },
    ),
  );

const bindingsSchema = z
  .record(objectName, z.record(z.string().min(1).max(63), objectName).meta({ maxProperties: 32 }))
  .meta({ maxProperties: 64 })
  .describe("importer capsule → (interface name → exporter capsule)");

export const agentSessionSpecSchema = z
  .strictObject({
    task: z.string().min(1).max(65_536).describe("The prompt the orchestrator receives"),
    orchestrator: objectName.describe("The capsule that runs the loop; one of capsules"),
    capsules: z
      .array(objectName)
      .min(1)
      .max(64)
      .meta({ description: "Capsule names in this namespace", "x-kubernetes-list-type": "set" }),
    bindings: bindingsSchema.optional(),
    mode: z.enum(SECURITY_MODES).describe("Security mode of the session"),
    budget: budgetSchema,
    principal: z.string().min(1).max(256).describe("Who the session acts for (audit, grants)"),
    ttlSecondsAfterFinished: count
      .optional()
      .describe("Delete the session this long after it finished"),
  })
  .meta(
    celRules(
      // The orchestrator is wired and gated like any capsule; one outside the list would run
      // with no manifest the session approved.
      { rule: "self.capsules.exists(c, c == self.orchestrator)", message: ORCHESTRATOR_MESSAGE },
      {
        rule: "!has(self.bindings) || self.bindings.all(i, i in self.capsules && self.bindings[i].all(f, self.bindings[i][f] in self.capsules))",
        message: BINDINGS_MESSAGE,
      },
      // Grants and the audit are bound to the principal; changing it mid-run would carry one
      // person's approvals over to another.
      {
        rule: "self.principal == oldSelf.principal",
        message: PRINCIPAL_IMMUTABLE_MESSAGE,
        fieldPath: ".principal",
      },
    ),
  )
  .superRefine((s, ctx) => {
    if (!s.capsules.includes(s.orchestrator)) {
      ctx.addIssue({ code: "custom", message: ORCHESTRATOR_MESSAGE, path: ["orchestrator"] });
    }
    for (const [importer, ifaces] of Object.entries(s.bindings ?? {})) {
      const names = [importer, ...Object.values(ifaces)];
      if (names.some((n) => !s.capsules.includes(n))) {
        ctx.addIssue({ code: "custom", message: BINDINGS_MESSAGE, path: ["bindings", importer] });
      }
    }
    if (s.budget.maxCallTokens > s.budget.maxSessionTokens) {
      ctx.addIssue({ code: "custom", message: CALL_TOKENS_MESSAGE, path: ["budget"] });
    }
    const call = usdToMicro(s.budget.maxCallUsd);
    const session = usdToMicro(s.budget.maxSessionUsd);
    if (call.ok && session.ok && call.micro > session.micro) {
      ctx.addIssue({ code: "custom", message: CALL_USD_MESSAGE, path: ["budget"] });
    }
  });

export const agentSessionStatusSchema = z.strictObject({
  conditions: conditionList(AGENT_SESSION_CONDITIONS).optional(),
  observedGeneration: count.optional(),
  usage: z
    .strictObject({
      inputTokens: count,
      outputTokens: count,
      costMicroUsd: int64String.describe("Money spent, in micro-dollars (1 USD = 1000000)"),
    })
    .optional(),
  pendingApprovals: count.optional().describe("Approvals waiting for a person"),
  result: z.string().max(262_144).optional().describe("The orchestrator's final answer"),
  startedAt: z.iso.datetime({ offset: true }).optional(),
  finishedAt: z.iso.datetime({ offset: true }).optional(),
});

export const agentSessionSchema = z.strictObject({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal("AgentSession"),
  metadata: objectMetaSchema,
  spec: agentSessionSpecSchema,
  status: agentSessionStatusSchema.optional(),
});

export type AgentSessionSpec = z.output<typeof agentSessionSpecSchema>;
export type AgentSessionStatus = z.output<typeof agentSessionStatusSchema>;
export type AgentSession = z.output<typeof agentSessionSchema>;
