/** The kinds the AgentSession and Approval reconcilers read and write. */
import type { ResourceType } from "../runtime/rest.js";

export const AgentSessions: ResourceType = {
  apiVersion: "astrid.dev/v1alpha1",
  kind: "AgentSession",
  plural: "agentsessions",
  namespaced: true,
};
export const Approvals: ResourceType = {
  apiVersion: "astrid.dev/v1alpha1",
  kind: "Approval",
  plural: "approvals",
  namespaced: true,
};
export const Pods: ResourceType = {
  apiVersion: "v1",
  kind: "Pod",
  plural: "pods",
  namespaced: true,
};
export const PersistentVolumeClaims: ResourceType = {
  apiVersion: "v1",
  kind: "PersistentVolumeClaim",
  plural: "persistentvolumeclaims",
  namespaced: true,
};
