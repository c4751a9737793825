/** The kinds the Capsule reconciler reads and writes, for the runtime's URLs and caches. */
import type { ResourceType } from "../runtime/rest.js";

export const Capsules: ResourceType = {
  apiVersion: "astrid.dev/v1alpha1",
  kind: "Capsule",
  plural: "capsules",
  namespaced: true,
};
export const StatefulSets: ResourceType = {
  apiVersion: "apps/v1",
  kind: "StatefulSet",
  plural: "statefulsets",
  namespaced: true,
};
export const NetworkPolicies: ResourceType = {
  apiVersion: "networking.k8s.io/v1",
  kind: "NetworkPolicy",
  plural: "networkpolicies",
  namespaced: true,
};
