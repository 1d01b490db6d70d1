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

{{/* Members of shard (dict "shard" $s "root" $): its own replicas, else
     replicasPerShard. */}}
{{- define "ringmq.shardReplicas" -}}
{{- $s := .shard -}}
{{- if hasKey $s "replicas" -}}{{ int $s.replicas }}{{- else -}}{{ int .root.Values.replicasPerShard }}{{- end -}}
{{- end -}}

{{/* Member id of pod ordinal k of shard i: i * 10 + k + 1. Fixed by the
     position alone, so scaling a shard keeps every existing id (a shard
     has at most 9 members). */}}
{{- define "ringmq.idBase" -}}
{{- add (mul . 10) 1 -}}
{{- end -}}

{{/* A majority of a shard's members (dict "shard" $s "root" $): what its
     PodDisruptionBudget keeps. */}}
{{- define "ringmq.majority" -}}
{{- add (div (int (include "ringmq.shardReplicas" .)) 2) 1 -}}
{{- end -}}

{{- define "ringmq.usersSecret" -}}
{{- default (printf "%s-users" (include "ringmq.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
