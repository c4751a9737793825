{{/*
What the operator may do. Capsules become StatefulSets, ConfigMaps and NetworkPolicies;
AgentSessions become a Pod, an audit PersistentVolumeClaim and a token Secret (deleted
with a finalizer once the token is revoked: agentsessions/finalizers); Approvals are
created from bus requests. Secrets: it writes the namespace's token issuer key, each
capsule's identity key and each session's token; it never needs to list Secrets it did
not create, but RBAC cannot say "only mine", so the namespaced mode is the way to keep
that right small.
*/}}
{{- define "astrid.rbacRules" -}}
- apiGroups: ["astrid.dev"]
  resources: ["capsules", "agentsessions", "approvals"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["astrid.dev"]
  resources: ["capsules/status", "agentsessions/status", "approvals/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["astrid.dev"]
  resources: ["capsules/finalizers", "agentsessions/finalizers", "approvals/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods", "services", "configmaps", "secrets", "serviceaccounts", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["events.k8s.io", ""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
