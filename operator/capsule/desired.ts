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
import { isIP } from "node:net";
import type { NetRule } from "../../core/manifest/capability-rules.js";
import type { Capsule } from "../api/capsule.js";
import { ISSUER_PEM, REVOCATION_BUCKET, TRUST_CONFIGMAP, TRUST_DIR } from "../identity/issuer.js";
import { KEY_PEM } from "../identity/key-secret.js";
import { NATS_CREDS_KEY, NATS_DIR, NATS_USER_ANNOTATION, type NatsPodUser } from "../nats/names.js";
import { controllerRef } from "../runtime/owner.js";
import type { KubeObject, OwnerReference } from "../runtime/rest.js";
import { manifestOf } from "./manifest-cache.js";

export const CONFIG_HASH_ANNOTATION = "astrid.dev/config-hash";
export const UNENFORCED_HOSTS_ANNOTATION = "astrid.dev/unenforced-hosts";
export const CAPSULE_LABEL = "astrid.dev/capsule";
export const METRICS_PORT = 9464;
/** The package of an image capsule: the manifest ConfigMap (the image holds the code). */
export const PACKAGE_DIR = "/etc/astrid/package";
/** The package of a fetched (wasmRef) capsule: an emptyDir the init container fills. */
export const FETCHED_PACKAGE_DIR = "/var/lib/astrid/package";
/** Where the fetcher reads the manifest the fetched archive must match byte for byte. */
export const MANIFEST_DIR = "/etc/astrid/manifest";
export const AUDIT_DIR = "/var/lib/astrid/audit";
export const IDENTITY_DIR = "/etc/astrid/identity";
/** The image's ENTRYPOINT is `node` and its CMD the operator: every sidecar container names its script. */
export const SIDECAR_ARGS: readonly string[] = ["dist/astrid-sidecar.js"];
export const FETCH_PACKAGE_ARGS: readonly string[] = ["dist/astrid-sidecar.js", "fetch-package"];

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
  /** Most a fetched package may take on the node's disk (the `package` emptyDir). Default `512Mi`. */
  packageStorage?: string;
}

export interface CapsuleChildren {
  configMap: KubeObject;
  statefulSet: KubeObject;
  networkPolicy: KubeObject;
}

export function manifestConfigMapName(capsule: string): string {
  return `${capsule}-manifest`;
}

export function identitySecretName(capsule: string): string {
  return `${capsule}-identity`;
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

export function capsuleOwnerRef(capsule: Capsule): OwnerReference {
  return controllerRef(capsule);
}

function meta(capsule: Capsule, name: string): KubeObject["metadata"] {
  return {
    name,
    namespace: capsule.metadata.namespace,
    labels: podLabels(capsule.metadata.name),
    ownerReferences: [capsuleOwnerRef(capsule)],
  };
}

/** How the pod gets the capsule's code. */
export type PackageSource =
  | { kind: "image"; image: string }
  | { kind: "fetch"; url: URL }
  | { kind: "unsupported"; message: string };

/**
 * An image runs as its own container; a wasmRef must be an http(s) URL of a `.capsule`
 * archive, which the `fetch-package` init container downloads and checks. Anything else (an
 * OCI reference) is refused up front: pods whose init container can never succeed would only
 * crash-loop with the reason buried in their logs.
 */
export function packageSource(capsule: Capsule): PackageSource {
  const { image, wasmRef } = capsule.spec.package;
  if (image) return { kind: "image", image: pinnedImage(image, capsule.spec.package.digest) };
  const ref = wasmRef ?? "";
  let url: URL | undefined;
  try {
    url = new URL(ref);
  } catch {
    url = undefined;
  }
  if (url && (url.protocol === "https:" || url.protocol === "http:")) return { kind: "fetch", url };
  return {
    kind: "unsupported",
    message: `package.wasmRef ${JSON.stringify(ref)}: expected an http(s) URL of a .capsule archive (made by astrid-build); OCI references and other schemes are not fetched yet`,
  };
}

/** `iface=capsule` entries, sorted so the env and the hash do not depend on map order. */
export function bindingList(bindings: Readonly<Record<string, string>>): string[] {
  return Object.keys(bindings)
    .sort()
    .map((k) => `${k}=${bindings[k]}`);
}

/**
 * sha256 over what the pods run: manifest, artefact, the spec fields that reach the pod and
 * the bindings (a re-wired import must restart the sidecars that read it once at start).
 * `replicas` is left out on purpose: scaling must not roll the running pods.
 */
export function configHash(
  capsule: Capsule,
  bindings: Readonly<Record<string, string>> = {},
): string {
  const s = capsule.spec;
  const relevant = {
    manifest: s.manifest,
    package: s.package,
    env: s.env ?? [],
    resources: s.resources ?? {},
    mode: s.mode ?? null,
    bindings: bindingList(bindings),
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

export const RESTRICTED_CONTAINER = {
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

export interface CapsulePodParts {
  initContainers: Record<string, unknown>[];
  sidecarEnv: { name: string; value: string }[];
  /**
   * `spec.env` (secret references) for a package the sidecar runs itself: the guest reads its
   * declared env from the sidecar's environment. Empty for an image package, whose own
   * container gets them. Goes after sidecarEnv in the sidecar container.
   */
  guestEnv: Record<string, unknown>[];
  volumes: Record<string, unknown>[];
  sidecarVolumeMounts: Record<string, unknown>[];
}

/**
 * Everything a pod needs to run `capsule`'s package under a sidecar, except the audit volume (the caller names it).
 *
 * The caller mounts its audit volume at AUDIT_DIR in the sidecar, gives the sidecar container
 * `args: SIDECAR_ARGS`, and adds what is its own: ASTRID_MODE, ASTRID_SETTINGS, session fields,
 * and for an image package the `capsuleContainer`. Throws for a package that cannot run
 * (see packageSource), so no pod is built that could never start.
 */
export function capsulePodParts(
  capsule: Capsule,
  bindings: Readonly<Record<string, string>>,
  opts: CapsuleWorkloadOptions,
  nats?: NatsPodUser,
): CapsulePodParts {
  const name = capsule.metadata.name;
  const source = packageSource(capsule);
  if (source.kind === "unsupported") throw new Error(`Capsule ${name}: ${source.message}`);
  const fetched = source.kind === "fetch";
  const packageDir = fetched ? FETCHED_PACKAGE_DIR : PACKAGE_DIR;
  const sidecarEnv: { name: string; value: string }[] = [
    { name: "ASTRID_PACKAGE_DIR", value: packageDir },
    { name: "ASTRID_BUS_KIND", value: "nats" },
    { name: "ASTRID_BUS_URL", value: opts.busUrl },
    { name: "ASTRID_AUDIT_DIR", value: AUDIT_DIR },
    { name: "ASTRID_IDENTITY_KEY_FILE", value: `${IDENTITY_DIR}/${KEY_PEM}` },
    { name: "ASTRID_IDENTITY_KEY_ID", value: name },
    // Every call must carry a token from the namespace's issuer; a revoked one is refused
    // across all pods at once through the shared KV bucket.
    { name: "ASTRID_TRUSTED_ISSUER_KEYS", value: `${TRUST_DIR}/${ISSUER_PEM}` },
    { name: "ASTRID_TOKENS_REQUIRED", value: "true" },
    { name: "ASTRID_REVOCATION_KIND", value: "kv" },
    { name: "ASTRID_REVOCATION_BUCKET", value: REVOCATION_BUCKET },
    // The probes and Prometheus reach the sidecar from outside the pod.
    { name: "ASTRID_HTTP_HOST", value: "0.0.0.0" },
    { name: "ASTRID_HTTP_PORT", value: String(METRICS_PORT) },
  ];
  const wired = bindingList(bindings);
  if (wired.length > 0) sidecarEnv.push({ name: "ASTRID_BINDINGS", value: wired.join(",") });
  // A capsule with kv buckets (a cache) keeps them in JetStream: its replicas and restarts
  // share one store, where a pod's memory would start empty and differ between replicas.
  if ((manifestOf(capsule)?.capabilities.kv.length ?? 0) > 0) {
    sidecarEnv.push({ name: "ASTRID_KV_KIND", value: "jetstream" });
  }

  const volumes: Record<string, unknown>[] = [
    // 0440 with the pod's fsGroup: the private key is readable by the sidecar's group only.
    { name: "identity", secret: { secretName: identitySecretName(name), defaultMode: 0o440 } },
    { name: "trust", configMap: { name: TRUST_CONFIGMAP } },
    { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
  ];
  const sidecarVolumeMounts: Record<string, unknown>[] = [
    { name: "package", mountPath: packageDir, readOnly: true },
    { name: "identity", mountPath: IDENTITY_DIR, readOnly: true },
    { name: "trust", mountPath: TRUST_DIR, readOnly: true },
    { name: "tmp", mountPath: "/tmp" },
  ];
  if (nats) {
    // The pod's own NATS user: the server enforces the capsule's ACL a second time, also
    // against a capsule that bypasses its sidecar. Readable by the sidecar's group only.
    sidecarEnv.push({ name: "ASTRID_BUS_CREDS_FILE", value: `${NATS_DIR}/${NATS_CREDS_KEY}` });
    volumes.push({ name: "nats", secret: { secretName: nats.secretName, defaultMode: 0o440 } });
    sidecarVolumeMounts.push({ name: "nats", mountPath: NATS_DIR, readOnly: true });
  }
  const initContainers: Record<string, unknown>[] = [];
  if (fetched) {
    volumes.push(
      { name: "package", emptyDir: { sizeLimit: opts.packageStorage ?? "512Mi" } },
      { name: "manifest", configMap: { name: manifestConfigMapName(name) } },
    );
    initContainers.push({
      name: "fetch-package",
      image: opts.sidecarImage,
      args: [...FETCH_PACKAGE_ARGS],
      env: [
        { name: "ASTRID_FETCH_URL", value: source.url.href },
        { name: "ASTRID_FETCH_DIGEST", value: capsule.spec.package.digest },
        { name: "ASTRID_FETCH_DEST", value: FETCHED_PACKAGE_DIR },
        // The operator derived the NetworkPolicy and the graph from the CR's manifest: the
        // archive's Capsule.toml must be that very text, or the pod would run other rules.
        { name: "ASTRID_FETCH_MANIFEST", value: `${MANIFEST_DIR}/Capsule.toml` },
      ],
      securityContext: RESTRICTED_CONTAINER,
      volumeMounts: [
        { name: "package", mountPath: FETCHED_PACKAGE_DIR },
        { name: "manifest", mountPath: MANIFEST_DIR, readOnly: true },
        { name: "tmp", mountPath: "/tmp" },
      ],
    });
  } else {
    volumes.push({ name: "package", configMap: { name: manifestConfigMapName(name) } });
  }
  const guestEnv = fetched ? [...(capsule.spec.env ?? [])] : [];
  return { initContainers, sidecarEnv, guestEnv, volumes, sidecarVolumeMounts };
}

/**
 * Why `spec.env` cannot be given to this capsule, or undefined. The entries land in the
 * sidecar's environment for a WASM package, where an `ASTRID_*` name would reconfigure the
 * enforcement itself (e.g. ASTRID_TOKENS_REQUIRED=false); and a name the manifest does not
 * declare would hand the capsule a secret nobody reviewed it asking for.
 */
export function envProblem(capsule: Capsule, declared: readonly string[]): string | undefined {
  const names = (capsule.spec.env ?? []).map((e) => e.name);
  const reserved = names.filter((n) => n.startsWith("ASTRID_"));
  if (reserved.length > 0) {
    return `spec.env: ${reserved.join(", ")}: names starting with ASTRID_ are reserved for the sidecar`;
  }
  const undeclared = names.filter((n) => !declared.includes(n));
  if (undeclared.length > 0) {
    return `spec.env: ${undeclared.join(", ")} not declared by the manifest; declared: ${declared.length > 0 ? declared.join(", ") : "none"}`;
  }
  return undefined;
}

/** The container of an image package (none for a wasmRef: the sidecar runs the module). */
export function capsuleContainer(capsule: Capsule): Record<string, unknown> | undefined {
  const source = packageSource(capsule);
  if (source.kind !== "image") return undefined;
  const spec = capsule.spec;
  return {
    name: "capsule",
    image: source.image,
    ...(spec.env ? { env: spec.env } : {}),
    ...(spec.resources ? { resources: spec.resources } : {}),
    securityContext: RESTRICTED_CONTAINER,
    volumeMounts: [{ name: "tmp", mountPath: "/tmp" }],
  };
}

export function desiredStatefulSet(
  capsule: Capsule,
  opts: CapsuleWorkloadOptions,
  bindings: Readonly<Record<string, string>> = {},
  nats?: NatsPodUser,
): KubeObject {
  const name = capsule.metadata.name;
  const spec = capsule.spec;
  const labels = podLabels(name);
  const parts = capsulePodParts(capsule, bindings, opts, nats);
  const sidecarEnv = [...parts.sidecarEnv];
  if (spec.mode) sidecarEnv.push({ name: "ASTRID_MODE", value: spec.mode });
  const probe = (path: string) => ({
    httpGet: { path, port: "metrics" },
    periodSeconds: 10,
  });
  const containers: Record<string, unknown>[] = [];
  const own = capsuleContainer(capsule);
  if (own) containers.push(own);
  containers.push({
    name: "sidecar",
    image: opts.sidecarImage,
    args: [...SIDECAR_ARGS],
    env: [...sidecarEnv, ...parts.guestEnv],
    ports: [{ name: "metrics", containerPort: METRICS_PORT, protocol: "TCP" }],
    readinessProbe: probe("/readyz"),
    livenessProbe: probe("/healthz"),
    securityContext: RESTRICTED_CONTAINER,
    volumeMounts: [...parts.sidecarVolumeMounts, { name: "audit", mountPath: AUDIT_DIR }],
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
        metadata: {
          labels,
          annotations: {
            [CONFIG_HASH_ANNOTATION]: configHash(capsule, bindings),
            // A re-issued user (new permissions) must reach the pods: the sidecar reads its
            // creds once, and the replaced user is revoked.
            ...(nats ? { [NATS_USER_ANNOTATION]: nats.user } : {}),
          },
        },
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
          ...(parts.initContainers.length > 0 ? { initContainers: parts.initContainers } : {}),
          containers,
          volumes: parts.volumes,
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
 * Egress: DNS, NATS, the manifest's IP/CIDR hosts and the package server; nothing else. A NetworkPolicy cannot
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
  // The init container downloads the package from inside the pod, so the pod must reach the
  // package server; the guest still cannot (the sidecar's net check knows only the manifest).
  const source = packageSource(capsule);
  if (source.kind === "fetch") {
    const host = source.url.hostname.replace(/^\[|\]$/g, "");
    const port = Number(source.url.port || (source.url.protocol === "https:" ? 443 : 80));
    const family = isIP(host);
    if (family === 0) unenforced.push(`${source.url.origin} (package fetch)`);
    else
      egress.push({
        to: [{ ipBlock: { cidr: `${host}/${family === 6 ? 128 : 32}` } }],
        ports: [{ protocol: "TCP", port }],
      });
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
  bindings: Readonly<Record<string, string>> = {},
  nats?: NatsPodUser,
): CapsuleChildren {
  return {
    configMap: desiredManifestConfigMap(capsule),
    statefulSet: desiredStatefulSet(capsule, opts, bindings, nats),
    networkPolicy: desiredNetworkPolicy(capsule, netRules, opts),
  };
}
