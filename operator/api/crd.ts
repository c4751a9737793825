/**
 * The CustomResourceDefinitions of astrid.dev, generated from the zod schemas: the schema a
 * client validates against and the one the API server enforces are the same object.
 */
import { stringify } from "yaml";
import type { z } from "zod";
import { agentSessionSpecSchema, agentSessionStatusSchema } from "./agentsession.js";
import { approvalSpecSchema, approvalStatusSchema } from "./approval.js";
import { capsuleSpecSchema, capsuleStatusSchema } from "./capsule.js";
import { GROUP, VERSION } from "./common.js";
import { type JsonSchema, structuralSchema } from "./structural.js";

export const KINDS = ["Capsule", "AgentSession", "Approval"] as const;
export type Kind = (typeof KINDS)[number];

export interface PrinterColumn {
  readonly name: string;
  readonly type: "string" | "integer" | "number" | "boolean" | "date";
  readonly jsonPath: string;
  readonly description?: string;
  /** 1 = shown only with `kubectl get -o wide`. */
  readonly priority?: number;
}

export interface KindDefinition {
  readonly kind: Kind;
  readonly plural: string;
  readonly singular: string;
  readonly shortNames: readonly string[];
  readonly description: string;
  readonly spec: z.ZodType;
  readonly status: z.ZodType;
  readonly printerColumns: readonly PrinterColumn[];
  /** Adds the scale subresource so an HPA or KEDA can drive `.spec.replicas`. */
  readonly scalable?: boolean;
}

const condition = (type: string) => `.status.conditions[?(@.type=="${type}")].status`;
const age: PrinterColumn = { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" };

export const KIND_DEFINITIONS: Readonly<Record<Kind, KindDefinition>> = {
  Capsule: {
    kind: "Capsule",
    plural: "capsules",
    singular: "capsule",
    shortNames: ["cap"],
    description: "A capsule deployed in a namespace: its manifest, artefact and replicas.",
    spec: capsuleSpecSchema,
    status: capsuleStatusSchema,
    scalable: true,
    printerColumns: [
      { name: "Ready", type: "string", jsonPath: condition("Ready") },
      { name: "Replicas", type: "integer", jsonPath: ".spec.replicas" },
      { name: "Available", type: "integer", jsonPath: ".status.readyReplicas" },
      { name: "Mode", type: "string", jsonPath: ".spec.mode" },
      { name: "Digest", type: "string", jsonPath: ".spec.package.digest", priority: 1 },
      age,
    ],
  },
  AgentSession: {
    kind: "AgentSession",
    plural: "agentsessions",
    singular: "agentsession",
    shortNames: ["as"],
    description: "One agent run: task, capsules, security mode, budget and principal.",
    spec: agentSessionSpecSchema,
    status: agentSessionStatusSchema,
    printerColumns: [
      { name: "Ready", type: "string", jsonPath: condition("Ready") },
      { name: "Running", type: "string", jsonPath: condition("Running") },
      { name: "Succeeded", type: "string", jsonPath: condition("Succeeded") },
      { name: "Mode", type: "string", jsonPath: ".spec.mode" },
      {
        name: "Cost-uUSD",
        type: "string",
        jsonPath: ".status.usage.costMicroUsd",
        description: "Money spent in micro-dollars",
      },
      { name: "Budget-USD", type: "string", jsonPath: ".spec.budget.maxSessionUsd" },
      { name: "Approvals", type: "integer", jsonPath: ".status.pendingApprovals" },
      { name: "Orchestrator", type: "string", jsonPath: ".spec.orchestrator", priority: 1 },
      { name: "Principal", type: "string", jsonPath: ".spec.principal", priority: 1 },
      age,
    ],
  },
  Approval: {
    kind: "Approval",
    plural: "approvals",
    singular: "approval",
    shortNames: ["apr"],
    description: "A question to a person about one action; answer it by setting spec.decision.",
    spec: approvalSpecSchema,
    status: approvalStatusSchema,
    printerColumns: [
      { name: "State", type: "string", jsonPath: ".status.state" },
      { name: "Session", type: "string", jsonPath: ".spec.session" },
      { name: "Capsule", type: "string", jsonPath: ".spec.capsule" },
      { name: "Action", type: "string", jsonPath: ".spec.action.kind" },
      { name: "Target", type: "string", jsonPath: ".spec.action.target" },
      { name: "Decision", type: "string", jsonPath: ".spec.decision" },
      { name: "By", type: "string", jsonPath: ".spec.decidedBy", priority: 1 },
      age,
    ],
  },
};

/** The `openAPIV3Schema` of a kind: apiVersion, kind, metadata, spec and status. */
export function openApiSchemaFor(kind: Kind): JsonSchema {
  const def = KIND_DEFINITIONS[kind];
  return {
    type: "object",
    description: def.description,
    required: ["spec"],
    properties: {
      apiVersion: { type: "string" },
      kind: { type: "string" },
      // The API server owns metadata's schema; a CRD may only say it is an object.
      metadata: { type: "object" },
      spec: structuralSchema(def.spec),
      status: structuralSchema(def.status),
    },
  };
}

/** The apiextensions.k8s.io/v1 CustomResourceDefinition of a kind. */
export function crdFor(kind: Kind): Record<string, unknown> {
  const def = KIND_DEFINITIONS[kind];
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${def.plural}.${GROUP}` },
    spec: {
      group: GROUP,
      scope: "Namespaced",
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular: def.singular,
        shortNames: [...def.shortNames],
        categories: ["astrid"],
      },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: openApiSchemaFor(kind) },
          subresources: {
            status: {},
            ...(def.scalable
              ? {
                  scale: {
                    specReplicasPath: ".spec.replicas",
                    statusReplicasPath: ".status.replicas",
                  },
                }
              : {}),
          },
          additionalPrinterColumns: def.printerColumns.map((c) => ({ ...c })),
        },
      ],
    },
  };
}

/** Where each kind's CRD is committed, relative to the repository root. */
export const CRD_FILES: Readonly<Record<Kind, string>> = {
  Capsule: "crds/capsule.yaml",
  AgentSession: "crds/agentsession.yaml",
  Approval: "crds/approval.yaml",
};

/** The committed YAML text of a kind's CRD. */
export function crdYaml(kind: Kind): string {
  return `# Generated by scripts/gen-crds.ts from operator/api/*.ts. Do not edit.\n${stringify(
    crdFor(kind),
    { lineWidth: 0 },
  )}`;
}
