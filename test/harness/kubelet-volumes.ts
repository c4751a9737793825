/**
 * What a container sees of its pod's API objects, made local: volumes written to host
 * directories, and env values (literal, from Secrets and ConfigMaps, from the downward API)
 * with every container path rewritten to its host path. Volumes are written once per pod; env
 * is read from the API server at each container start. A Secret created after the pod is
 * picked up by the next try.
 */
import { chmodSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import {
  ConfigMaps,
  type KubeRest,
  NotFoundError,
  resourcePath,
  Secrets,
} from "../../operator/runtime/rest.js";
import {
  type Container,
  expandVars,
  fieldRefValue,
  type KeyToPath,
  type PathMap,
  type Pod,
  type Volume,
} from "./kubelet-pod.js";

const PersistentVolumeClaims = {
  apiVersion: "v1",
  kind: "PersistentVolumeClaim",
  plural: "persistentvolumeclaims",
  namespaced: true,
} as const;

/** A pod the harness cannot start yet (or ever); the message goes into the container status. */
export class ContainerConfigError extends Error {
  override name = "ContainerConfigError";
}

interface DataObject {
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
}

/** The content of a Secret or ConfigMap as bytes per key; undefined when it does not exist. */
export async function readKeys(
  rest: KubeRest,
  kind: "secret" | "configmap",
  namespace: string,
  name: string,
): Promise<Map<string, Buffer> | undefined> {
  const type = kind === "secret" ? Secrets : ConfigMaps;
  let obj: DataObject;
  try {
    obj = await rest.request<DataObject>("GET", resourcePath(type, namespace, name));
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
  const out = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(obj.data ?? {})) {
    // Secret data is base64 on the wire; ConfigMap data is text, binaryData base64.
    out.set(k, kind === "secret" ? Buffer.from(v, "base64") : Buffer.from(v, "utf8"));
  }
  for (const [k, v] of Object.entries(obj.binaryData ?? {})) out.set(k, Buffer.from(v, "base64"));
  return out;
}

function writeKeys(
  dir: string,
  keys: Map<string, Buffer>,
  items: KeyToPath[] | undefined,
  defaultMode: number | undefined,
  what: string,
): void {
  const files: [string, Buffer, number | undefined][] = items?.length
    ? items.map((i) => {
        const v = keys.get(i.key);
        if (v === undefined) throw new ContainerConfigError(`${what} has no key "${i.key}"`);
        return [i.path, v, i.mode];
      })
    : [...keys].map(([k, v]) => [k, v, undefined]);
  for (const [rel, bytes, mode] of files) {
    const file = path.join(dir, rel);
    // items[].path is validated by the API server not to contain "..", but check anyway:
    // a path that leaves the volume would write anywhere on the test machine.
    if (!file.startsWith(`${dir}${path.sep}`)) {
      throw new ContainerConfigError(`${what}: item path "${rel}" leaves the volume`);
    }
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, bytes);
    const m = mode ?? defaultMode;
    if (m !== undefined) chmodSync(file, m);
  }
}

/**
 * Writes the pod's volumes under `podDir` and returns their host directories. A
 * persistentVolumeClaim is the one host directory `claimDir(namespace, claim)`, which outlives
 * the pod — what a real PersistentVolume would do for the audit chain read after a session.
 */
export async function prepareVolumes(
  rest: KubeRest,
  pod: Pod,
  podDir: string,
  claimDir: (namespace: string, claim: string) => string,
): Promise<Map<string, string>> {
  const ns = pod.metadata.namespace;
  const dirs = new Map<string, string>();
  for (const vol of pod.spec.volumes ?? []) {
    dirs.set(
      vol.name,
      await prepareVolume(rest, ns, vol, path.join(podDir, "volumes", vol.name), claimDir),
    );
  }
  return dirs;
}

async function prepareVolume(
  rest: KubeRest,
  ns: string,
  vol: Volume,
  dir: string,
  claimDir: (namespace: string, claim: string) => string,
): Promise<string> {
  if (vol.emptyDir) {
    mkdirSync(dir, { recursive: true });
    return dir;
  }
  if (vol.configMap || vol.secret) {
    const isSecret = vol.secret !== undefined;
    const src = vol.secret
      ? { name: vol.secret.secretName, ...vol.secret }
      : { ...(vol.configMap as NonNullable<Volume["configMap"]>) };
    const what = `${isSecret ? "secret" : "configmap"} "${src.name}" (volume "${vol.name}")`;
    const keys = await readKeys(rest, isSecret ? "secret" : "configmap", ns, src.name);
    if (!keys && !src.optional) throw new ContainerConfigError(`${what} not found`);
    // From scratch, so a retry after a failed attempt leaves no file of that attempt behind.
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    writeKeys(dir, keys ?? new Map(), src.items, src.defaultMode, what);
    return dir;
  }
  if (vol.persistentVolumeClaim) {
    const claim = vol.persistentVolumeClaim.claimName;
    try {
      await rest.request("GET", resourcePath(PersistentVolumeClaims, ns, claim));
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new ContainerConfigError(`persistentvolumeclaim "${claim}" not found`);
      }
      throw err;
    }
    const host = claimDir(ns, claim);
    mkdirSync(host, { recursive: true });
    return host;
  }
  const kinds = Object.keys(vol).filter((k) => k !== "name");
  throw new ContainerConfigError(
    `volume "${vol.name}" (${kinds.join(", ")}): the kubelet harness emulates only configMap, secret, emptyDir and persistentVolumeClaim volumes`,
  );
}

/** Adds the container's mounts to `paths`: each mountPath (+subPath) → its volume's host dir. */
export function mapMounts(
  c: Container,
  volumes: ReadonlyMap<string, string>,
  paths: PathMap,
): void {
  for (const m of c.volumeMounts ?? []) {
    const dir = volumes.get(m.name);
    if (!dir)
      throw new ContainerConfigError(`container "${c.name}" mounts unknown volume "${m.name}"`);
    const host = m.subPath ? path.join(dir, m.subPath) : dir;
    if (m.subPath && !host.startsWith(`${dir}${path.sep}`)) {
      throw new ContainerConfigError(
        `container "${c.name}": subPath "${m.subPath}" leaves the volume`,
      );
    }
    paths.add(m.mountPath, host);
  }
}

/**
 * The container's environment in Kubernetes order (envFrom, then env, each able to refer to
 * the ones before with `$(VAR)`), values under a mapped path rewritten to the host path.
 */
export async function resolveEnv(
  rest: KubeRest,
  pod: Pod,
  c: Container,
  paths: PathMap,
  hostIP: string,
): Promise<Map<string, string>> {
  const ns = pod.metadata.namespace;
  const vars = new Map<string, string>();
  for (const from of c.envFrom ?? []) {
    const ref = from.secretRef ?? from.configMapRef;
    if (!ref) continue;
    const kind = from.secretRef ? "secret" : "configmap";
    const keys = await readKeys(rest, kind, ns, ref.name);
    if (!keys) {
      if (ref.optional) continue;
      throw new ContainerConfigError(`${kind} "${ref.name}" not found`);
    }
    for (const [k, v] of keys) vars.set(`${from.prefix ?? ""}${k}`, v.toString("utf8"));
  }
  for (const e of c.env ?? []) {
    const value = await envValue(rest, pod, e, vars, hostIP);
    if (value !== undefined) vars.set(e.name, value);
  }
  for (const [k, v] of vars) vars.set(k, paths.rewrite(v));
  return vars;
}

async function envValue(
  rest: KubeRest,
  pod: Pod,
  e: NonNullable<Container["env"]>[number],
  vars: ReadonlyMap<string, string>,
  hostIP: string,
): Promise<string | undefined> {
  const ns = pod.metadata.namespace;
  const from = e.valueFrom;
  if (!from) return expandVars(e.value ?? "", vars);
  const keyRef = from.secretKeyRef ?? from.configMapKeyRef;
  if (keyRef) {
    const kind = from.secretKeyRef ? "secret" : "configmap";
    const keys = await readKeys(rest, kind, ns, keyRef.name);
    const v = keys?.get(keyRef.key);
    if (v !== undefined) return v.toString("utf8");
    if (keyRef.optional) return undefined;
    throw new ContainerConfigError(
      keys
        ? `couldn't find key ${keyRef.key} in ${kind} ${ns}/${keyRef.name}`
        : `${kind} "${keyRef.name}" not found`,
    );
  }
  if (from.fieldRef) {
    const v = fieldRefValue(pod, from.fieldRef.fieldPath, hostIP);
    if (v === undefined) {
      throw new ContainerConfigError(
        `env ${e.name}: fieldRef ${from.fieldRef.fieldPath} is not emulated by the kubelet harness`,
      );
    }
    return v;
  }
  throw new ContainerConfigError(
    `env ${e.name}: this valueFrom is not emulated by the kubelet harness`,
  );
}
