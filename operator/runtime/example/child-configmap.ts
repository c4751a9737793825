/**
 * The smallest useful controller, kept as the worked example of docs/operator-runtime.md:
 * every ConfigMap labelled `example.astrid.dev/parent=true` owns a child ConfigMap
 * `<parent>-child` (label `parent=<parent>`) holding a copy of the parent's data.
 *
 * It shows the three habits every Astrid reconciler follows: desired state comes from a pure
 * builder; a missing child is re-created because the reconciler sees it missing (not because a
 * delete event said so); and nothing is written when the child already matches, so restarts
 * and resyncs cause no churn.
 */

import type { Informer } from "../cache.js";
import type { Client } from "../client.js";
import { isSubset } from "../client.js";
import type { Result } from "../controller.js";
import { filtered, forObject, forOwner } from "../handlers.js";
import { splitKey } from "../keys.js";
import { ConfigMaps, type KubeObject } from "../rest.js";
import type { WorkQueue } from "../workqueue.js";

export const PARENT_LABEL = "example.astrid.dev/parent";

export interface ConfigMapObject extends KubeObject {
  data?: Record<string, string>;
}

export function isParent(obj: KubeObject): boolean {
  return obj.metadata?.labels?.[PARENT_LABEL] === "true";
}

export function childName(parentName: string): string {
  return `${parentName}-child`;
}

/** Pure builder: parent in, the child the operator wants out. */
export function desiredChildConfigMap(parent: ConfigMapObject): ConfigMapObject {
  const name = parent.metadata?.name;
  const uid = parent.metadata?.uid;
  if (!name || !uid) throw new Error("parent ConfigMap must have metadata.name and metadata.uid");
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: childName(name),
      namespace: parent.metadata?.namespace,
      labels: { parent: name },
      ownerReferences: [
        {
          apiVersion: "v1",
          kind: "ConfigMap",
          name,
          uid,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    data: { ...(parent.data ?? {}) },
  };
}

/** Wires the informer's events to `queue`: parents by their own key, children by their owner's. */
export function watchParentsAndChildren(informer: Informer, queue: WorkQueue): void {
  informer.addEventHandler(filtered(isParent, forObject(queue)));
  informer.addEventHandler(forOwner(queue, { kind: "ConfigMap", group: "" }));
}

/** The reconciler: key in, the child made to match the parent. */
export function childConfigMapReconciler(
  client: Client,
): (key: string) => Promise<Result | undefined> {
  return async (key) => {
    const { namespace, name } = splitKey(key);
    const parent = client.get<ConfigMapObject>(ConfigMaps, namespace, name);
    // Gone or going: the garbage collector removes the child through its ownerReference.
    if (!parent || parent.metadata?.deletionTimestamp || !isParent(parent)) return undefined;
    const desired = desiredChildConfigMap(parent);
    const current = client.get(ConfigMaps, namespace, childName(name));
    if (current && isSubset(desired, current)) return undefined;
    await client.apply(ConfigMaps, desired);
    return undefined;
  };
}
