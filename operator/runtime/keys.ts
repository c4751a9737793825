/**
 * Reconcile keys: `namespace/name` for namespaced objects, `name` for cluster-scoped ones —
 * the only thing a reconciler is told (client-go's MetaNamespaceKeyFunc).
 */
import type { KubeObject } from "./rest.js";

export interface ObjectRef {
  readonly namespace?: string;
  readonly name: string;
}

export function keyOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

export function objectKey(obj: KubeObject): string {
  const name = obj.metadata?.name;
  if (!name) throw new Error("object has no metadata.name, so it has no key");
  return keyOf(obj.metadata?.namespace, name);
}

export function splitKey(key: string): ObjectRef {
  const parts = key.split("/");
  if (parts.length === 1 && parts[0]) return { name: parts[0] };
  if (parts.length === 2 && parts[0] && parts[1]) return { namespace: parts[0], name: parts[1] };
  throw new Error(`invalid key "${key}": expected "namespace/name" or "name"`);
}
