{{/*
What the operator may do. Secrets: it writes each capsule's NATS credentials and token
material; it never needs to list Secrets it did not create, but RBAC cannot say
"only mine", so the namespaced mode is the way to keep that right small.
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
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["events.k8s.io", ""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
