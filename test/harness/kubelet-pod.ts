/**
 * The slice of the Pod API the kubelet harness reads, and the pure rules it applies to it:
 * which local entrypoint an image maps to, and which container path prefix maps to which host
 * path. Kept apart from the process and API plumbing so the rules read on their own.
 */
import path from "node:path";
import type { KubeObject, ObjectMeta, ResourceType } from "../../operator/runtime/rest.js";

export const Pods: ResourceType = {
  apiVersion: "v1",
  kind: "Pod",
  plural: "pods",
  namespaced: true,
};

export interface KeyRef {
  name: string;
  key: string;
  optional?: boolean;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: KeyRef;
    configMapKeyRef?: KeyRef;
    fieldRef?: { fieldPath: string };
    resourceFieldRef?: unknown;
  };
}

export interface EnvFromSource {
  prefix?: string;
  configMapRef?: { name: string; optional?: boolean };
  secretRef?: { name: string; optional?: boolean };
}

export interface Probe {
  httpGet?: { path?: string; port: number | string; scheme?: string };
  tcpSocket?: { port: number | string };
  exec?: { command?: string[] };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  failureThreshold?: number;
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  workingDir?: string;
  env?: EnvVar[];
  envFrom?: EnvFromSource[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; subPath?: string; readOnly?: boolean }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  terminationMessagePath?: string;
  terminationMessagePolicy?: "File" | "FallbackToLogsOnError";
}

export interface KeyToPath {
  key: string;
  path: string;
  mode?: number;
}

export interface Volume {
  name: string;
  configMap?: { name: string; items?: KeyToPath[]; defaultMode?: number; optional?: boolean };
  secret?: { secretName: string; items?: KeyToPath[]; defaultMode?: number; optional?: boolean };
  emptyDir?: Record<string, unknown>;
  persistentVolumeClaim?: { claimName: string; readOnly?: boolean };
  [source: string]: unknown;
}

export interface Pod extends KubeObject {
  metadata: ObjectMeta & {
    name: string;
    namespace: string;
    uid: string;
    deletionGracePeriodSeconds?: number;
  };
  spec: {
    nodeName?: string;
    serviceAccountName?: string;
    restartPolicy?: "Always" | "OnFailure" | "Never";
    terminationGracePeriodSeconds?: number;
    initContainers?: Container[];
    containers: Container[];
    volumes?: Volume[];
  };
  status?: { phase?: string; [field: string]: unknown };
}

/** What runs for an image: its ENTRYPOINT/CMD on this machine, and how its ports are moved. */
export interface ImageEntrypoint {
  /** The image's ENTRYPOINT, e.g. `["node"]`; a container's `command` replaces it. */
  command: string[];
  /** The image's CMD, used only when the container sets neither `command` nor `args`. */
  args?: string[];
  /** The image's working directory on this machine (e.g. the repo root for `astrid/astrid`). */
  cwd: string;
  /** Environment the image would bake in. */
  env?: Record<string, string>;
  /**
   * Container port name → the environment variable the program reads its port from. Every
   * pod on this one host would otherwise bind the same port; the harness gives each declared
   * port a free loopback port and passes it here.
   */
  portEnv?: Record<string, string>;
}

/** The repository part of an image reference: without `@digest` and without `:tag`. */
export function imageName(image: string): string {
  const noDigest = image.split("@", 1)[0] ?? image;
  const colon = noDigest.lastIndexOf(":");
  // A colon before the last slash is a registry port (localhost:5000/x), not a tag.
  return colon > noDigest.lastIndexOf("/") ? noDigest.slice(0, colon) : noDigest;
}

/**
 * The local argv of a container, by Kubernetes' rule: `command` replaces the ENTRYPOINT, and
 * `args` replaces the CMD; a container that sets `command` alone drops the image's CMD.
 */
export function containerArgv(c: Container, image: ImageEntrypoint): string[] {
  if (c.command?.length) return [...c.command, ...(c.args ?? [])];
  return [...image.command, ...(c.args ?? image.args ?? [])];
}

/**
 * Expands `$(VAR)` references to variables defined earlier, as the kubelet does for env
 * values, command and args; `$$(VAR)` stays a literal `$(VAR)`, an unknown one stays as is.
 */
export function expandVars(text: string, vars: ReadonlyMap<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) => {
    if (m === "$$") return "$";
    return name !== undefined && vars.has(name) ? (vars.get(name) ?? "") : m;
  });
}

/**
 * Container paths → host paths. A value is rewritten when it is a mapped path or lies under
 * one, by the longest such prefix — so a mount inside another mount wins over its parent.
 */
export class PathMap {
  private readonly entries: [string, string][] = [];

  add(containerPath: string, hostPath: string): void {
    this.entries.push([path.posix.normalize(containerPath).replace(/\/$/, "") || "/", hostPath]);
    this.entries.sort((a, b) => b[0].length - a[0].length);
  }

  /** The host path for `value`, or `value` unchanged when no mapped path is its prefix. */
  rewrite(value: string): string {
    for (const [from, to] of this.entries) {
      if (value === from) return to;
      // Only at a path boundary: /etc/astrid/trust must not capture /etc/astrid/trustee.
      if (value.startsWith(`${from}/`)) return path.join(to, value.slice(from.length + 1));
    }
    return value;
  }
}

/** Value of a downward-API fieldRef, or undefined for a path the harness does not emulate. */
export function fieldRefValue(pod: Pod, fieldPath: string, hostIP: string): string | undefined {
  const m = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (m) {
    const bag = m[1] === "labels" ? pod.metadata.labels : pod.metadata.annotations;
    return bag?.[m[2] ?? ""] ?? "";
  }
  switch (fieldPath) {
    case "metadata.name":
      return pod.metadata.name;
    case "metadata.namespace":
      return pod.metadata.namespace;
    case "metadata.uid":
      return pod.metadata.uid;
    case "spec.nodeName":
      return pod.spec.nodeName ?? "";
    case "spec.serviceAccountName":
      return pod.spec.serviceAccountName ?? "";
    case "status.podIP":
    case "status.podIPs":
    case "status.hostIP":
    case "status.hostIPs":
      return hostIP;
    default:
      return undefined;
  }
}
