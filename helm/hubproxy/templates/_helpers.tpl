{{/* Names and labels shared by every object of the chart. */}}
{{- define "hubproxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hubproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hubproxy.labels" -}}
{{ include "hubproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "hubproxy.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "hubproxy.fullname" .) -}}
{{- end -}}

{{/* Refuse settings that cannot work with several replicas. */}}
{{- define "hubproxy.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.secrets.databaseUrl) (not .Values.secrets.existingSecret) -}}
{{- fail "replicaCount > 1 needs a shared database: set secrets.databaseUrl (PostgreSQL) or secrets.existingSecret" -}}
{{- end -}}
{{- if and (eq .Values.store.type "s3") (not .Values.store.s3.bucket) -}}
{{- fail "store.type s3 needs store.s3.bucket" -}}
{{- end -}}
{{- if and (eq .Values.store.type "local") (gt (int .Values.replicaCount) 1) (not .Values.store.persistence.existingClaim) (not .Values.store.persistence.storageClass) -}}
{{- fail "store.type local with several replicas needs a ReadWriteMany volume: store.persistence.existingClaim or storageClass" -}}
{{- end -}}
{{- end -}}

{{/* "true" when several pods run (fixed replicas above one, or an autoscaler). */}}
{{- define "hubproxy.sharedVolume" -}}
{{- or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) -}}
{{- end -}}

{{- define "hubproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "hubproxy.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}
