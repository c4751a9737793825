/**
 * The owner reference a reconciler puts on the children it makes: `controller: true` (so
 * watches map a child back to its owner, and no second controller adopts it) and
 * `blockOwnerDeletion` (foreground deletion waits for the children).
 */
import type { OwnerReference } from "./rest.js";

export interface Owner {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly uid?: unknown };
}

export function controllerRef(owner: Owner): OwnerReference {
  const uid = owner.metadata.uid;
  // Without the uid the garbage collector would not know which incarnation owns the child.
  if (typeof uid !== "string" || uid === "")
    throw new Error(`${owner.kind} ${owner.metadata.name} must have metadata.uid`);
  return {
    apiVersion: owner.apiVersion,
    kind: owner.kind,
    name: owner.metadata.name,
    uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}
