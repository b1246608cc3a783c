{{/* Name of the chart, or nameOverride. */}}
{{- define "semantic-router.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: fullnameOverride, else <release> when it already contains the name, else
<release>-<name>. Room is left for the longest suffix (-extproc-headless). */}}
{{- define "semantic-router.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "semantic-router.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: semantic-router
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Selector labels of the router pods. */}}
{{- define "semantic-router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "semantic-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end }}

{{/* Selector labels of the bundled Envoy pods. */}}
{{- define "semantic-router.envoySelectorLabels" -}}
app.kubernetes.io/name: {{ include "semantic-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: envoy
{{- end }}

{{- define "semantic-router.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "semantic-router.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "semantic-router.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* restricted-v2 (OpenShift) and the Kubernetes "restricted" Pod Security Standard: no fixed
UID or GID (OpenShift assigns one; the image's USER is numeric and non-root elsewhere). */}}
{{- define "semantic-router.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "semantic-router.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The router's ext_proc address as the bundled Envoy resolves it (headless: every pod). */}}
{{- define "semantic-router.extprocHeadlessHost" -}}
{{- printf "%s-extproc-headless.%s.svc" (include "semantic-router.fullname" .) .Release.Namespace }}
{{- end }}

{{/* host:port for a listen flag; IPv6 addresses in brackets. Args: (list address port). */}}
{{- define "semantic-router.listen" -}}
{{- $addr := index . 0 }}{{- $port := index . 1 }}
{{- if contains ":" $addr }}{{ printf "[%s]:%v" $addr $port }}{{ else }}{{ printf "%s:%v" $addr $port }}{{ end }}
{{- end }}
