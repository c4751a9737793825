/**
 * Capsule: one capsule deployed in a namespace — its manifest, the artefact that runs it and
 * how many replicas. The operator turns it into pods (capsule + sidecar) and a NATS user.
 */
import { z } from "zod";
import { SECURITY_MODES } from "../../core/security/modes/policy-table.js";
import {
  API_VERSION,
  celRules,
  conditionList,
  count,
  objectMetaSchema,
  readablePattern,
  SHA256_DIGEST,
  secretKeyRefSchema,
} from "./common.js";

export const CAPSULE_CONDITIONS = ["Accepted", "ResolvedRefs", "Ready"] as const;

const DIGEST_MESSAGE = "must be sha256: followed by 64 lowercase hex characters";

export const ONE_ARTEFACT_MESSAGE = "exactly one of package.image or package.wasmRef must be set";

// A Kubernetes quantity ("500m", "1Gi", 2): the API server's int-or-string.
const quantity = z.union([z.string().max(64), z.number().int()]);

export const capsulePackageSchema = z
  .strictObject({
    image: z.string().min(1).max(512).optional().describe("Container image that runs the capsule"),
    wasmRef: z
      .string()
      .min(1)
      .max(2048)
      .optional()
      .describe("OCI reference or URL of the WASM module"),
    digest: z
      .string()
      .max(71)
      .regex(SHA256_DIGEST, DIGEST_MESSAGE)
      .meta(readablePattern(DIGEST_MESSAGE))
      .describe("sha256 of the artefact; a pulled artefact with another digest is refused"),
  })
  .meta(
    // Two artefacts would leave it to the operator which one runs; none leaves nothing to run.
    celRules({ rule: "has(self.image) != has(self.wasmRef)", message: ONE_ARTEFACT_MESSAGE }),
  )
  .superRefine((p, ctx) => {
    if ((p.image === undefined) === (p.wasmRef === undefined)) {
      ctx.addIssue({ code: "custom", message: ONE_ARTEFACT_MESSAGE });
    }
  });

export const capsuleEnvSchema = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Z_][A-Z0-9_]*$/, "must be an environment variable name like ANTHROPIC_API_KEY"),
  // Only secret references: a literal value in a CR would be readable by anyone who can get it.
  valueFrom: z.strictObject({ secretKeyRef: secretKeyRefSchema }),
});

export const capsuleSpecSchema = z.strictObject({
  manifest: z
    .string()
    .min(1)
    .max(262_144)
    .describe("The Capsule.toml text; parsed and checked by the operator (Accepted condition)"),
  package: capsulePackageSchema,
  replicas: z.number().int().min(0).max(100).default(1).describe("Pods running this capsule"),
  resources: z
    .strictObject({
      limits: z.record(z.string(), quantity).optional(),
      requests: z.record(z.string(), quantity).optional(),
    })
    .optional()
    .describe("Compute resources of the capsule container, as in a Pod"),
  env: z
    .array(capsuleEnvSchema)
    .max(64)
    .optional()
    .meta({
      description: "Secrets given to the capsule as environment variables",
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["name"],
    }),
  mode: z
    .enum(SECURITY_MODES)
    .optional()
    .describe(
      "Security mode of this capsule's own pods, for every session they serve (default safe); an AgentSession's mode applies to its orchestrator",
    ),
});

export const capsuleStatusSchema = z.strictObject({
  conditions: conditionList(CAPSULE_CONDITIONS).optional(),
  observedGeneration: count.optional(),
  digest: z.string().regex(SHA256_DIGEST).optional().describe("Digest of the running artefact"),
  replicas: count.optional().describe("Pods created (the scale subresource reads this)"),
  readyReplicas: count.optional(),
  natsUser: z.string().max(256).optional().describe("NATS user the operator issued"),
});

export const capsuleSchema = z.strictObject({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal("Capsule"),
  metadata: objectMetaSchema,
  spec: capsuleSpecSchema,
  status: capsuleStatusSchema.optional(),
});

export type CapsuleSpec = z.output<typeof capsuleSpecSchema>;
export type CapsuleStatus = z.output<typeof capsuleStatusSchema>;
export type Capsule = z.output<typeof capsuleSchema>;
