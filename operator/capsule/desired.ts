/**
 * Pure builders: a Capsule (and its parsed manifest) in, the objects the operator wants out —
 * the manifest ConfigMap, the StatefulSet running capsule + sidecar, and the NetworkPolicy
 * opening egress only to what the manifest's `net` rules name. No I/O, so every field is
 * unit-tested without a cluster.
 *
 * A StatefulSet rather than a Deployment: the sidecar's audit chain is an append-only file
 * chain guarded by a lock; each replica needs its own volume that follows it across restarts
 * (volumeClaimTemplate), and a Deployment's rolling update would briefly run two pods on the
 * same ReadWriteOnce volume — two writers of one chain.
 */
import { createHash } from "node:crypto";
import type { NetRule } from "../../core/manifest/capability-rules.js";
import type { Capsule } from "../api/capsule.js";
import type { KubeObject, OwnerReference } from "../runtime/rest.js";

export const CONFIG_HASH_ANNOTATION = "astrid.dev/config-hash";
export const UNENFORCED_HOSTS_ANNOTATION = "astrid.dev/unenforced-hosts";
export const CAPSULE_LABEL = "astrid.dev/capsule";
export const METRICS_PORT = 9464;
export const PACKAGE_DIR = "/etc/astrid/package";
export const AUDIT_DIR = "/var/lib/astrid/audit";
export const IDENTITY_DIR = "/etc/astrid/identity";

export interface CapsuleWorkloadOptions {
  /** Image of the sidecar injected into every capsule pod. */
  sidecarImage: string;
  /** NATS URL the sidecar connects to, e.g. `nats://nats.nats.svc:4222`. */
  busUrl: string;
  /** NATS client port capsule pods may reach (NetworkPolicy). Default 4222. */
  natsPort?: number;
  /** Namespace labels of the NATS server. Default `kubernetes.io/metadata.name: nats`. */
  natsNamespaceSelector?: Record<string, string>;
  /** Pod labels of the NATS server. Default `app.kubernetes.io/name: nats`. */
  natsPodSelector?: Record<string, string>;
  /** Size of each replica's audit volume. Default `1Gi`. */
  auditStorage?: string;
  /** StorageClass of the audit volume; the cluster default when absent. */
  auditStorageClassName?: string;
}

export interface CapsuleChildren {
  configMap: KubeObject;
  statefulSet: KubeObject;
  networkPolicy: KubeObject;
}

export function manifestConfigMapName(capsule: string): string {
  return `${capsule}-manifest`;
}

/** The labels of every capsule pod (docs/helm.md: the PodMonitor and baseline policy select on them). */
export function podLabels(capsule: string): Record<string, string> {
  return {
    "app.kubernetes.io/part-of": "astrid",
    "app.kubernetes.io/component": "capsule",
    "app.kubernetes.io/name": capsule,
    [CAPSULE_LABEL]: capsule,
  };
}

function ownerRef(capsule: Capsule): OwnerReference {
  const uid = capsule.metadata.uid;
  if (typeof uid !== "string" || uid === "")
    throw new Error(`Capsule ${capsule.metadata.name} must have metadata.uid`);
  return {
    apiVersion: capsule.apiVersion,
    kind: "Capsule",
    name: capsule.metadata.name,
    uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

function meta(capsule: Capsule, name: string): KubeObject["metadata"] {
  return {
    name,
    namespace: capsule.metadata.namespace,
    labels: podLabels(capsule.metadata.name),
    ownerReferences: [ownerRef(capsule)],
  };
}

/**
 * sha256 over what the pods run: manifest, artefact and the spec fields that reach the pod.
 * `replicas` is left out on purpose: scaling must not roll the running pods.
 */
export function configHash(capsule: Capsule): string {
  const s = capsule.spec;
  const relevant = {
    manifest: s.manifest,
    package: s.package,
    env: s.env ?? [],
    resources: s.resources ?? {},
    mode: s.mode ?? null,
  };
  return createHash("sha256").update(JSON.stringify(relevant)).digest("hex");
}

export function desiredManifestConfigMap(capsule: Capsule): KubeObject {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: meta(capsule, manifestConfigMapName(capsule.metadata.name)),
    data: { "Capsule.toml": capsule.spec.manifest },
  };
}

const restrictedContainer = {
  runAsNonRoot: true,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
};

/** `image@digest`, so the node runs exactly the artefact the Capsule names, not whatever a tag points at now. */
export function pinnedImage(image: string, digest: string): string {
  return image.includes("@") ? image : `${image}@${digest}`;
}

export function desiredStatefulSet(capsule: Capsule, opts: CapsuleWorkloadOptions): KubeObject {
  const name = capsule.metadata.name;
  const spec = capsule.spec;
  const labels = podLabels(name);
  const sidecarEnv: { name: string; value: string }[] = [
    { name: "ASTRID_PACKAGE_DIR", value: PACKAGE_DIR },
    { name: "ASTRID_BUS_KIND", value: "nats" },
    { name: "ASTRID_BUS_URL", value: opts.busUrl },
    { name: "ASTRID_AUDIT_DIR", value: AUDIT_DIR },
    { name: "ASTRID_IDENTITY_KEY_FILE", value: `${IDENTITY_DIR}/key.pem` },
    { name: "ASTRID_IDENTITY_KEY_ID", value: name },
    // The probes and Prometheus reach the sidecar from outside the pod.
    { name: "ASTRID_HTTP_HOST", value: "0.0.0.0" },
    { name: "ASTRID_HTTP_PORT", value: String(METRICS_PORT) },
  ];
  if (spec.mode) sidecarEnv.push({ name: "ASTRID_MODE", value: spec.mode });
  const probe = (path: string) => ({
    httpGet: { path, port: "metrics" },
    periodSeconds: 10,
  });
  const containers: Record<string, unknown>[] = [];
  if (spec.package.image) {
    containers.push({
      name: "capsule",
      image: pinnedImage(spec.package.image, spec.package.digest),
      ...(spec.env ? { env: spec.env } : {}),
      ...(spec.resources ? { resources: spec.resources } : {}),
      securityContext: restrictedContainer,
      volumeMounts: [{ name: "tmp", mountPath: "/tmp" }],
    });
  }
  containers.push({
    name: "sidecar",
    image: opts.sidecarImage,
    env: sidecarEnv,
    ports: [{ name: "metrics", containerPort: METRICS_PORT, protocol: "TCP" }],
    readinessProbe: probe("/readyz"),
    livenessProbe: probe("/healthz"),
    securityContext: restrictedContainer,
    volumeMounts: [
      { name: "package", mountPath: PACKAGE_DIR, readOnly: true },
      { name: "identity", mountPath: IDENTITY_DIR, readOnly: true },
      { name: "audit", mountPath: AUDIT_DIR },
      { name: "tmp", mountPath: "/tmp" },
    ],
  });
  const pvcSpec: Record<string, unknown> = {
    accessModes: ["ReadWriteOnce"],
    resources: { requests: { storage: opts.auditStorage ?? "1Gi" } },
  };
  if (opts.auditStorageClassName) pvcSpec.storageClassName = opts.auditStorageClassName;
  return {
    apiVersion: "apps/v1",
    kind: "StatefulSet",
    metadata: meta(capsule, name),
    spec: {
      replicas: spec.replicas,
      serviceName: name,
      selector: { matchLabels: { [CAPSULE_LABEL]: name } },
      template: {
        metadata: { labels, annotations: { [CONFIG_HASH_ANNOTATION]: configHash(capsule) } },
        spec: {
          // Capsule pods never talk to the API server; a mounted token would only be loot.
          automountServiceAccountToken: false,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 10001,
            runAsGroup: 10001,
            fsGroup: 10001,
            seccompProfile: { type: "RuntimeDefault" },
          },
          containers,
          volumes: [
            { name: "package", configMap: { name: manifestConfigMapName(name) } },
            { name: "identity", secret: { secretName: `${name}-identity` } },
            { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
          ],
        },
      },
      volumeClaimTemplates: [{ metadata: { name: "audit" }, spec: pvcSpec }],
    },
  };
}

function ipBlockCidr(rule: NetRule): string | undefined {
  const h = rule.host;
  if (h.kind === "ip") return `${h.address}/${h.address.includes(":") ? 128 : 32}`;
  if (h.kind === "cidr") return `${h.network}/${h.prefix}`;
  return undefined;
}

/**
 * Egress: DNS, NATS and the manifest's IP/CIDR hosts; nothing else. A NetworkPolicy cannot
 * name DNS hosts, and allowing "any address" for them would open the pod to the world, so they
 * get no rule here (fail closed) and are listed in an annotation; the sidecar's own net check
 * still applies to them, but a cluster egress proxy is needed for the traffic to flow.
 */
export function desiredNetworkPolicy(
  capsule: Capsule,
  netRules: readonly NetRule[],
  opts: CapsuleWorkloadOptions,
): KubeObject {
  const name = capsule.metadata.name;
  const egress: Record<string, unknown>[] = [
    {
      ports: [
        { protocol: "UDP", port: 53 },
        { protocol: "TCP", port: 53 },
      ],
    },
    {
      to: [
        {
          namespaceSelector: {
            matchLabels: opts.natsNamespaceSelector ?? { "kubernetes.io/metadata.name": "nats" },
          },
          podSelector: {
            matchLabels: opts.natsPodSelector ?? { "app.kubernetes.io/name": "nats" },
          },
        },
      ],
      ports: [{ protocol: "TCP", port: opts.natsPort ?? 4222 }],
    },
  ];
  const unenforced: string[] = [];
  for (const rule of netRules) {
    const cidr = ipBlockCidr(rule);
    if (!cidr) {
      unenforced.push(rule.source);
      continue;
    }
    const peer: Record<string, unknown> = { to: [{ ipBlock: { cidr } }] };
    if (rule.port !== "any") peer.ports = [{ protocol: "TCP", port: rule.port }];
    egress.push(peer);
  }
  const metadata = meta(capsule, name) ?? {};
  // Always set (empty when none), so a host removed from the manifest also leaves the
  // annotation: isSubset cannot notice a field the builder stopped setting.
  metadata.annotations = {
    [UNENFORCED_HOSTS_ANNOTATION]:
      unenforced.length > 0
        ? `no egress allowed (a NetworkPolicy cannot match DNS names): ${unenforced.join(", ")}`
        : "",
  };
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata,
    spec: {
      podSelector: { matchLabels: { [CAPSULE_LABEL]: name } },
      policyTypes: ["Egress"],
      egress,
    },
  };
}

export function desiredChildren(
  capsule: Capsule,
  netRules: readonly NetRule[],
  opts: CapsuleWorkloadOptions,
): CapsuleChildren {
  return {
    configMap: desiredManifestConfigMap(capsule),
    statefulSet: desiredStatefulSet(capsule, opts),
    networkPolicy: desiredNetworkPolicy(capsule, netRules, opts),
  };
}
