/**
 * docs/crds.md, generated from the same schemas as the CRDs so the page cannot describe a
 * field, rule or column the API server does not have.
 */
import { AGENT_SESSION_CONDITIONS } from "./agentsession.js";
import { APPROVAL_CONDITIONS, APPROVAL_STATES } from "./approval.js";
import { CAPSULE_CONDITIONS } from "./capsule.js";
import { API_VERSION, type CelRule } from "./common.js";
import { CRD_FILES, KIND_DEFINITIONS, KINDS, type Kind, openApiSchemaFor } from "./crd.js";
import type { JsonSchema } from "./structural.js";

const CONDITIONS: Record<Kind, readonly string[]> = {
  Capsule: CAPSULE_CONDITIONS,
  AgentSession: AGENT_SESSION_CONDITIONS,
  Approval: APPROVAL_CONDITIONS,
};

const cell = (s: string) => s.replaceAll("|", "\\|").replaceAll("\n", " ");

function typeOf(s: JsonSchema): string {
  if (s["x-kubernetes-int-or-string"] === true) return "int-or-string";
  if (s.type === "array") return `[]${typeOf(s.items as JsonSchema)}`;
  if (s.type === "object" && s.additionalProperties !== undefined) {
    return `map[string]${typeOf(s.additionalProperties as JsonSchema)}`;
  }
  if (s.type === "integer" && s.format === "int64") return "integer";
  return String(s.type);
}

function constraints(s: JsonSchema): string {
  const out: string[] = [];
  if (Array.isArray(s.enum)) out.push(s.enum.map((e) => `\`${e}\``).join(", "));
  if (s.default !== undefined) out.push(`default ${JSON.stringify(s.default)}`);
  if (s.minimum !== undefined) out.push(`≥ ${s.minimum}`);
  if (s.maximum !== undefined && s.maximum !== Number.MAX_SAFE_INTEGER) out.push(`≤ ${s.maximum}`);
  if (s.minLength !== undefined && s.minLength !== 1) out.push(`length ≥ ${s.minLength}`);
  if (s.maxLength !== undefined) out.push(`length ≤ ${s.maxLength}`);
  if (s.minItems !== undefined) out.push(`items ≥ ${s.minItems}`);
  if (s.maxItems !== undefined) out.push(`items ≤ ${s.maxItems}`);
  if (s.maxProperties !== undefined) out.push(`keys ≤ ${s.maxProperties}`);
  if (s.pattern !== undefined && (s.pattern as string).length <= 60) out.push(`\`${s.pattern}\``);
  if (s.format === "date-time") out.push("RFC 3339");
  return out.join("; ");
}

function fieldRows(s: JsonSchema, path: string, required: boolean, rows: string[]): void {
  if (path.includes(".") || path.includes("[")) {
    rows.push(
      `| \`${path}\` | ${cell(typeOf(s))} | ${required ? "yes" : ""} | ${cell(constraints(s))} | ${cell(String(s.description ?? ""))} |`,
    );
  }
  // A condition list is described once, under "Conditions", not field by field.
  if (s["x-kubernetes-list-map-keys"] !== undefined && path.endsWith("conditions")) return;
  const props = s.properties as Record<string, JsonSchema> | undefined;
  const req = new Set((s.required as string[] | undefined) ?? []);
  for (const [name, child] of Object.entries(props ?? {})) {
    fieldRows(child, path === "" ? name : `${path}.${name}`, req.has(name), rows);
  }
  if (s.type === "array") {
    const items = s.items as JsonSchema;
    for (const [name, child] of Object.entries(
      (items.properties as Record<string, JsonSchema>) ?? {},
    )) {
      fieldRows(
        child,
        `${path}[].${name}`,
        ((items.required as string[]) ?? []).includes(name),
        rows,
      );
    }
  }
}

function celRows(s: JsonSchema, path: string, rows: string[]): void {
  for (const r of (s["x-kubernetes-validations"] as CelRule[] | undefined) ?? []) {
    const transition = r.rule.includes("oldSelf") ? " (on update)" : "";
    rows.push(`| \`${path}\`${transition} | \`${cell(r.rule)}\` | ${cell(r.message)} |`);
  }
  for (const [name, child] of Object.entries((s.properties as Record<string, JsonSchema>) ?? {})) {
    celRows(child, `${path}.${name}`, rows);
  }
  if (s.items !== undefined) celRows(s.items as JsonSchema, `${path}[]`, rows);
  if (typeof s.additionalProperties === "object") {
    celRows(s.additionalProperties as JsonSchema, `${path}.*`, rows);
  }
}

function kindSection(kind: Kind): string {
  const def = KIND_DEFINITIONS[kind];
  const schema = openApiSchemaFor(kind);
  const props = schema.properties as Record<string, JsonSchema>;
  const lines = [
    `## ${kind}`,
    "",
    `${def.description} Plural \`${def.plural}\`, short name \`${def.shortNames.join("`, `")}\`, CRD \`${CRD_FILES[kind]}\`.`,
    "",
  ];
  for (const part of ["spec", "status"] as const) {
    const rows: string[] = [];
    fieldRows(props[part] as JsonSchema, part, false, rows);
    lines.push(
      `### ${part}`,
      "",
      "| field | type | required | constraints | meaning |",
      "| --- | --- | --- | --- | --- |",
      ...rows,
      "",
    );
  }
  const cel: string[] = [];
  celRows(props.spec as JsonSchema, "spec", cel);
  celRows(props.status as JsonSchema, "status", cel);
  if (cel.length > 0) {
    lines.push(
      "### CEL rules (enforced by the API server)",
      "",
      "| on | rule | message |",
      "| --- | --- | --- |",
      ...cel,
      "",
    );
  }
  lines.push(`**Conditions:** ${CONDITIONS[kind].map((c) => `\`${c}\``).join(", ")}.`, "");
  if (kind === "Approval") {
    lines.push(`**status.state:** ${APPROVAL_STATES.map((s) => `\`${s}\``).join(", ")}.`, "");
  }
  lines.push(
    "**Printer columns** (`kubectl get`; priority 1 only with `-o wide`):",
    "",
    "| column | JSONPath | priority |",
    "| --- | --- | --- |",
    ...def.printerColumns.map(
      (c) => `| ${c.name} | \`${cell(c.jsonPath)}\` | ${c.priority ?? 0} |`,
    ),
    "",
  );
  return lines.join("\n");
}

const INTRO = `# Custom resources (\`${API_VERSION}\`)

<!-- Generated by scripts/gen-crds.ts from operator/api/*.ts; a test fails if it is stale. -->

The cluster shape's API. Each kind is a zod schema in \`operator/api/\` — the single source
of truth: the TypeScript types are inferred from it, \`crdFor(kind)\` turns it into the
CustomResourceDefinition in \`crds/\`, and this page is generated from the same objects.
Regenerate all three with \`npx tsx scripts/gen-crds.ts\`.

All kinds are namespaced, in the category \`astrid\` (\`kubectl get astrid\`), with a
\`status\` subresource: a spec update never changes status, and a status update never
changes spec. Conditions follow \`metav1.Condition\` (type, status, observedGeneration,
lastTransitionTime, reason, message), keyed by \`type\`, with a summarising \`Ready\`.

**Using them.**

\`\`\`sh
kubectl apply --server-side -f crds/            # install (or: helm chart)
kubectl create namespace astrid-demo
kubectl apply -f examples/                       # three capsules, a session, a pre-approval
kubectl get astrid -n astrid-demo                # every astrid.dev object
kubectl get apr -n astrid-demo                   # approvals waiting for an answer
kubectl patch apr <name> -n astrid-demo --type merge \\
  -p '{"spec":{"decision":"allow_once","decidedBy":"alice@example.com"}}'
\`\`\`

An Approval's decision can be set once; GitOps pre-approves by creating the Approval with
\`decision\` and \`decidedBy\` already set (\`examples/approval-preapproved.yaml\`).

**Numbers.** Token counts are JSON integers (≤ 2^53 − 1; the budget code holds them as safe
integers). Money is a decimal USD string with at most 6 decimals in specs (\`"5.00"\`, never a
float) and an integer micro-dollar count written as a string in status
(\`usage.costMicroUsd\`), since a cluster-wide sum may pass 2^53.

**Rules in two places.** The rules that read only the new object (amount formats, one
artefact, orchestrator and bindings among the capsules, call limits at most the session's,
decidedBy with a decision) are checked by the zod schema as well, so
a client sees the same message before it sends. Rules that compare with the stored object
(\`oldSelf\`) run only on the server.

`;

export function crdReference(): string {
  return `${INTRO}${KINDS.map(kindSection).join("\n")}`;
}
