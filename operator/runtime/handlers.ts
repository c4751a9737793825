/**
 * Event handlers turn informer events into reconcile keys and nothing more: which object
 * changed, never how. `forObject` enqueues the object itself; `forOwner` enqueues the owner
 * named in a child's ownerReferences (controller-runtime's EnqueueRequestForOwner), so a
 * deleted or edited child wakes the parent that is responsible for it.
 */
import type { EventHandler } from "./cache.js";
import { keyOf, objectKey } from "./keys.js";
import type { KubeObject } from "./rest.js";

/** Where keys go; a WorkQueue satisfies it. */
export interface KeySink {
  add(key: string): void;
}

export function forObject(queue: KeySink): EventHandler {
  return {
    onAdd: (obj) => queue.add(objectKey(obj)),
    onUpdate: (_old, obj) => queue.add(objectKey(obj)),
    onDelete: (obj) => queue.add(objectKey(obj)),
  };
}

export interface OwnerMatch {
  /** The owner's kind, e.g. `ConfigMap`. */
  kind: string;
  /** The owner's group ("" for core); any group when absent. */
  group?: string;
  /** Only follow the reference marked `controller: true` (the default), as controller-runtime's OnlyControllerOwner. */
  onlyController?: boolean;
}

/** Keys of the owners of `obj` that match; owners live in the child's namespace. */
export function ownerKeys(obj: KubeObject, match: OwnerMatch): string[] {
  const onlyController = match.onlyController ?? true;
  const keys: string[] = [];
  for (const ref of obj.metadata?.ownerReferences ?? []) {
    if (ref.kind !== match.kind) continue;
    if (match.group !== undefined && groupOf(ref.apiVersion) !== match.group) continue;
    if (onlyController && ref.controller !== true) continue;
    // Owner references never cross namespaces (API conventions), so the child's namespace is the owner's.
    keys.push(keyOf(obj.metadata?.namespace, ref.name));
  }
  return keys;
}

export function forOwner(queue: KeySink, match: OwnerMatch): EventHandler {
  const enqueue = (obj: KubeObject) => {
    for (const k of ownerKeys(obj, match)) queue.add(k);
  };
  return {
    onAdd: enqueue,
    onUpdate: (oldObj, newObj) => {
      // An update that moved the child to another owner must wake both.
      enqueue(oldObj);
      enqueue(newObj);
    },
    onDelete: enqueue,
  };
}

function groupOf(apiVersion: string): string {
  const slash = apiVersion.indexOf("/");
  return slash < 0 ? "" : apiVersion.slice(0, slash);
}

/** Passes on only events whose object satisfies `predicate` (controller-runtime predicates). */
export function filtered(
  predicate: (obj: KubeObject) => boolean,
  handler: EventHandler,
): EventHandler {
  return {
    onAdd: (obj) => {
      if (predicate(obj)) handler.onAdd?.(obj);
    },
    onUpdate: (oldObj, newObj) => {
      if (predicate(oldObj) || predicate(newObj)) handler.onUpdate?.(oldObj, newObj);
    },
    onDelete: (obj) => {
      if (predicate(obj)) handler.onDelete?.(obj);
    },
  };
}
