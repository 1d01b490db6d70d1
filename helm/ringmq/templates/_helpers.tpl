{{/* Names: <release>-ringmq-<shard> for a shard's StatefulSet and headless
     Service, <release>-ringmq-router for the routers. */}}
{{- define "ringmq.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ringmq.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ringmq.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* A majority of one shard's members: what a PodDisruptionBudget keeps. */}}
{{- define "ringmq.majority" -}}
{{- add (div .Values.replicasPerShard 2) 1 -}}
{{- end -}}

{{- define "ringmq.usersSecret" -}}
{{- default (printf "%s-users" (include "ringmq.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
