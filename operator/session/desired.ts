/**
 * Pure builders for what an AgentSession becomes: the Pod `<session>-session` running the
 * orchestrator's package under a session-bound sidecar in task mode, the audit PVC
 * `<session>-audit` (outlives the pod, so the chain can be verified after the run), and the
 * Secret `<session>-session-token` holding the capability token the sidecar presents with its
 * one prompt. Spec in, objects out: every field is unit-tested without a cluster.
 */
import {
  COLLECTING_INTERFACES,
  type GraphCapsule,
  resolveGraph,
} from "../../core/manifest/graph.js";
import type { MintClaims } from "../../core/security/tokens/mint.js";
import type { AgentSession } from "../api/agentsession.js";
import {
  AUDIT_DIR,
  type CapsulePodParts,
  METRICS_PORT,
  podLabels,
  RESTRICTED_CONTAINER,
  SIDECAR_ARGS,
} from "../capsule/desired.js";
import { controllerRef } from "../runtime/owner.js";
import type { KubeObject, OwnerReference } from "../runtime/rest.js";

export const SESSION_LABEL = "astrid.dev/session";
export const TOKEN_ID_ANNOTATION = "astrid.dev/token-id";
export const TOKEN_EXPIRES_ANNOTATION = "astrid.dev/token-expires";
export const SESSION_TOKEN_DIR = "/etc/astrid/session";
export const TERMINATION_LOG = "/dev/termination-log";
export const DEFAULT_TASK_TIMEOUT_MS = 600_000;
/** The session token's lifetime: long enough for any task, short enough that a leak expires. */
export const SESSION_TOKEN_TTL_SECONDS = 24 * 3600;

export function sessionPodName(session: string): string {
  return `${session}-session`;
}
export function auditClaimName(session: string): string {
  return `${session}-audit`;
}
export function tokenSecretName(session: string): string {
  return `${session}-session-token`;
}

/** What `capsulePodParts` (operator/capsule/desired.ts) gives for the orchestrator capsule. */
export type PodParts = CapsulePodParts;

export interface SessionWorkloadOptions {
  sidecarImage: string;
  /** ASTRID_TASK_TIMEOUT_MS; default 600000. */
  taskTimeoutMs?: number;
  /** Size of the audit PVC; default `1Gi`. */
  auditStorage?: string;
  auditStorageClassName?: string;
}

/** A session capsule by its object name, with its parsed manifest. */
export interface SessionCapsule {
  name: string;
  manifest: GraphCapsule;
}

type Session = Pick<AgentSession, "apiVersion" | "kind" | "metadata" | "spec">;

export function sessionOwnerRef(session: Session): OwnerReference {
  return controllerRef(session);
}

/**
 * The pod carries the orchestrator's capsule labels, so the chart's PodMonitor scrapes it, the
 * baseline default-deny policy and the orchestrator's own egress NetworkPolicy (which selects
 * `astrid.dev/capsule`) confine it exactly as they confine the capsule's own pods. Its
 * controller owner reference keeps the capsule's StatefulSet from adopting it.
 */
export function sessionLabels(session: Session): Record<string, string> {
  return { ...podLabels(session.spec.orchestrator), [SESSION_LABEL]: session.metadata.name };
}

function meta(session: Session, name: string): KubeObject["metadata"] {
  return {
    name,
    namespace: session.metadata.namespace,
    labels: sessionLabels(session),
    ownerReferences: [sessionOwnerRef(session)],
  };
}

/**
 * The orchestrator's imports wired to capsules of the session, by object name (subjects and
 * identities use the Capsule's name, not the manifest's package name). Explicit
 * `spec.bindings` win; everything else is resolved from the manifests, and a graph that does
 * not resolve throws its GraphError rather than guessing.
 */
export function orchestratorBindings(
  session: Session,
  capsules: readonly SessionCapsule[],
): Record<string, string> {
  const graph = capsules.map((c) => ({
    ...c.manifest,
    package: { ...c.manifest.package, name: c.name },
  }));
  const plan = resolveGraph(graph, normalizedBindings(session.spec.bindings ?? {}));
  return Object.fromEntries(
    plan.bindings
      // A collecting interface (every tool capsule at once) has no single target: the tool
      // capsules reach the guest as the tool_capsules setting instead.
      .filter(
        (b) => b.importer === session.spec.orchestrator && !COLLECTING_INTERFACES.has(b.interface),
      )
      .map((b) => [b.interface, b.exporter]),
  );
}

/**
 * Binding keys as the graph names interfaces, `<ns>.<iface>`. A bare `llm` (how
 * examples/agentsession.yaml writes it) means the `astrid` namespace, the only one Astrid's
 * own interfaces live in.
 */
export function normalizedBindings(
  bindings: Readonly<Record<string, Readonly<Record<string, string>>>>,
): Record<string, Record<string, string>> {
  return Object.fromEntries(
    Object.entries(bindings).map(([importer, ifaces]) => [
      importer,
      Object.fromEntries(
        Object.entries(ifaces).map(([k, v]) => [k.includes(".") ? k : `astrid.${k}`, v]),
      ),
    ]),
  );
}

/** The session's capsules that export `astrid.tool`, in the order the session lists them. */
export function toolCapsules(session: Session, capsules: readonly SessionCapsule[]): string[] {
  const byName = new Map(capsules.map((c) => [c.name, c]));
  return session.spec.capsules.filter(
    (n) => byName.get(n)?.manifest.exports.astrid?.tool !== undefined,
  );
}

/** The claims of the session token (sub = principal, bound to the session, 24 h). */
export function sessionTokenClaims(session: Session, nowSeconds: number): MintClaims {
  return {
    sub: session.spec.principal,
    res: ["tool:**", "topic:>"],
    perm: ["execute", "publish"],
    ses: session.metadata.name,
    iat: nowSeconds,
    exp: nowSeconds + SESSION_TOKEN_TTL_SECONDS,
  };
}

export interface MintedSessionToken {
  token: string;
  jti: string;
  /** Expiry, Unix seconds. */
  exp: number;
}

/** The token Secret; its annotations let deletion revoke the token id without parsing it. */
export function desiredTokenSecret(session: Session, minted: MintedSessionToken): KubeObject {
  const metadata = meta(session, tokenSecretName(session.metadata.name)) ?? {};
  metadata.annotations = {
    [TOKEN_ID_ANNOTATION]: minted.jti,
    [TOKEN_EXPIRES_ANNOTATION]: String(minted.exp),
  };
  return {
    apiVersion: "v1",
    kind: "Secret",
    type: "Opaque",
    metadata,
    data: { token: Buffer.from(minted.token).toString("base64") },
  };
}

export function desiredAuditClaim(session: Session, opts: SessionWorkloadOptions): KubeObject {
  const spec: Record<string, unknown> = {
    accessModes: ["ReadWriteOnce"],
    resources: { requests: { storage: opts.auditStorage ?? "1Gi" } },
  };
  if (opts.auditStorageClassName) spec.storageClassName = opts.auditStorageClassName;
  return {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: meta(session, auditClaimName(session.metadata.name)),
    spec,
  };
}

/** Later entries replace earlier ones of the same name, keeping the first one's position. */
function mergeByName<T extends { name?: unknown }>(...lists: T[][]): T[] {
  const out = new Map<unknown, T>();
  for (const list of lists) for (const item of list) out.set(item.name, item);
  return [...out.values()];
}

function mergeSettings(
  env: readonly { name: string; value: string }[],
  extra: readonly string[],
): string {
  const existing = env.find((e) => e.name === "ASTRID_SETTINGS")?.value ?? "";
  const keys = new Set(extra.map((s) => s.slice(0, s.indexOf("="))));
  const kept = existing.split(",").filter((s) => s !== "" && !keys.has(s.slice(0, s.indexOf("="))));
  return [...kept, ...extra].join(",");
}

export interface SessionPodInput {
  /** `capsulePodParts(orchestrator, orchestratorBindings(...), ...)`. */
  parts: PodParts;
  /** toolCapsules(...). */
  toolCapsules: readonly string[];
  /** `capsuleContainer(orchestrator)`: the capsule's own container for an image package. */
  capsuleContainer?: Record<string, unknown>;
}

export function desiredSessionPod(
  session: Session,
  input: SessionPodInput,
  opts: SessionWorkloadOptions,
): KubeObject {
  const name = session.metadata.name;
  const spec = session.spec;
  const timeoutMs = opts.taskTimeoutMs ?? DEFAULT_TASK_TIMEOUT_MS;
  const settings = mergeSettings(input.parts.sidecarEnv, [
    `tool_capsules=${input.toolCapsules.join(",")}`,
  ]);
  const sessionEnv = [
    { name: "ASTRID_SESSION", value: name },
    { name: "ASTRID_PRINCIPAL", value: spec.principal },
    { name: "ASTRID_MODE", value: spec.mode },
    { name: "ASTRID_BUDGET_MAX_SESSION_USD", value: spec.budget.maxSessionUsd },
    { name: "ASTRID_BUDGET_MAX_CALL_USD", value: spec.budget.maxCallUsd },
    { name: "ASTRID_BUDGET_MAX_SESSION_TOKENS", value: String(spec.budget.maxSessionTokens) },
    { name: "ASTRID_BUDGET_MAX_CALL_TOKENS", value: String(spec.budget.maxCallTokens) },
    { name: "ASTRID_TASK_TEXT", value: spec.task },
    { name: "ASTRID_TASK_TOKEN_FILE", value: `${SESSION_TOKEN_DIR}/token` },
    { name: "ASTRID_TASK_RESULT_FILE", value: TERMINATION_LOG },
    { name: "ASTRID_TASK_TIMEOUT_MS", value: String(timeoutMs) },
    { name: "ASTRID_SETTINGS", value: settings },
    // The audit chain lives on the session's PVC whatever the capsule pods use.
    { name: "ASTRID_AUDIT_DIR", value: AUDIT_DIR },
  ];
  const probe = (path: string) => ({ httpGet: { path, port: "metrics" }, periodSeconds: 10 });
  const mounts = mergeByName(input.parts.sidecarVolumeMounts, [
    { name: "audit", mountPath: AUDIT_DIR },
    { name: "session-token", mountPath: SESSION_TOKEN_DIR, readOnly: true },
    { name: "tmp", mountPath: "/tmp" },
  ]);
  const volumes = mergeByName(input.parts.volumes, [
    { name: "audit", persistentVolumeClaim: { claimName: auditClaimName(name) } },
    { name: "session-token", secret: { secretName: tokenSecretName(name), defaultMode: 0o440 } },
    { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
  ]);
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: meta(session, sessionPodName(name)),
    spec: {
      // One run: a restarted task would repeat tool calls that already had side effects.
      restartPolicy: "Never",
      // The sidecar's own task timeout ends the run; this is the backstop if it hangs.
      activeDeadlineSeconds: Math.ceil(timeoutMs / 1000) + 300,
      // Session pods never talk to the API server; a mounted token would only be loot.
      automountServiceAccountToken: false,
      securityContext: {
        runAsNonRoot: true,
        runAsUser: 10001,
        runAsGroup: 10001,
        fsGroup: 10001,
        seccompProfile: { type: "RuntimeDefault" },
      },
      ...(input.parts.initContainers.length > 0
        ? { initContainers: input.parts.initContainers }
        : {}),
      containers: [
        ...(input.capsuleContainer ? [input.capsuleContainer] : []),
        {
          name: "sidecar",
          image: opts.sidecarImage,
          args: [...SIDECAR_ARGS],
          env: [...mergeByName(input.parts.sidecarEnv, sessionEnv), ...input.parts.guestEnv],
          ports: [{ name: "metrics", containerPort: METRICS_PORT, protocol: "TCP" }],
          readinessProbe: probe("/readyz"),
          livenessProbe: probe("/healthz"),
          securityContext: RESTRICTED_CONTAINER,
          volumeMounts: mounts,
          terminationMessagePath: TERMINATION_LOG,
          terminationMessagePolicy: "File",
        },
      ],
      volumes,
    },
  };
}
