{{/* Chart name, truncated to the 63 characters a label value may hold. */}}
{{- define "astrid.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: <release>-astrid unless the release name already says astrid. */}}
{{- define "astrid.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "astrid.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "astrid.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: astrid
{{- end }}

{{/* Selector labels never change across upgrades (a Deployment's selector is immutable). */}}
{{- define "astrid.selectorLabels" -}}
app.kubernetes.io/name: {{ include "astrid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "astrid.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "astrid.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image@digest wins over image:tag; the tag defaults to appVersion, never "latest". */}}
{{- define "astrid.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if eq $tag "latest" }}
{{- fail "image.tag: expected a fixed version or a digest, got \"latest\" (a moving tag runs code nobody reviewed)" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The namespaces the operator acts in; with namespaced RBAC an empty list means the release namespace. */}}
{{- define "astrid.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- join "," .Values.watchNamespaces }}
{{- else if .Values.rbac.namespaced }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "astrid.natsUrl" -}}
{{- if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else if .Values.nats.enabled }}
{{- printf "nats://%s-nats.%s.svc:4222" .Release.Name .Release.Namespace }}
{{- else }}
{{- fail "nats.url: expected the URL of an existing NATS server (nats://host:4222), or nats.enabled=true to install one" }}
{{- end }}
{{- end }}
