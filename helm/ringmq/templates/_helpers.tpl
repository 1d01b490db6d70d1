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

{{/* A shard's id (dict "shard" $s "index" $i): its `id` value, else its
     position in `shards` (what every release before `id` existed used).
     Member id of pod ordinal k of the shard = id * 10 + k + 1: fixed by
     the id alone, so scaling a shard keeps every existing id (a shard has
     at most 9 members) and removing another shard changes none. */}}
{{- define "ringmq.shardId" -}}
{{- if hasKey .shard "id" -}}{{ int .shard.id }}{{- else -}}{{ int .index }}{{- end -}}
{{- end -}}

{{- define "ringmq.idBase" -}}
{{- add (mul . 10) 1 -}}
{{- end -}}

{{/* Refuse values that would give a member another id than it has, or
     remove what cannot be removed (docs/deploy.md#adding-and-removing-shards). */}}
{{- define "ringmq.checkShards" -}}
{{- $ids := dict -}}
{{- $names := dict -}}
{{- $removing := .Values.removeShards | default list -}}
{{- range $i, $s := .Values.shards -}}
{{- $id := include "ringmq.shardId" (dict "shard" $s "index" $i) -}}
{{- if hasKey $ids $id -}}
{{- fail (printf "shards %s and %s have the same id %s: ids are never shared or reused" (get $ids $id) $s.name $id) -}}
{{- end -}}
{{- $_ := set $ids $id $s.name -}}
{{- if hasKey $names $s.name -}}
{{- fail (printf "shard %s is listed twice" $s.name) -}}
{{- end -}}
{{- $_ := set $names $s.name $id -}}
{{- if and $removing (not (hasKey $s "id")) -}}
{{- fail (printf "shard %s has no id: while shards are removed every shard needs its id (its position in shards before any removal, counting from 0: docs/deploy.md#shard-ids)" $s.name) -}}
{{- end -}}
{{- end -}}
{{- $first := index .Values.shards 0 -}}
{{- if ne (include "ringmq.shardId" (dict "shard" $first "index" 0)) "0" -}}
{{- fail (printf "the first shard (%s) must have id 0: its members run the meta group, so it stays first and is never removed" $first.name) -}}
{{- end -}}
{{- range $removing -}}
{{- if hasKey $names . -}}
{{- fail (printf "shard %s is in removeShards and in shards: take it out of shards" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The first members of shard (dict "shard" $s "index" $i "root" $) as
     `ringmqctl shard add --members` takes them, one ID@RAFT@RPC per line:
     the pods below replicasPerShard (later pods join with `member add`). */}}
{{- define "ringmq.firstMembers" -}}
{{- $full := include "ringmq.fullname" .root -}}
{{- $base := int (include "ringmq.idBase" (int (include "ringmq.shardId" .))) -}}
{{- $n := min (int (include "ringmq.shardReplicas" .)) (int .root.Values.replicasPerShard) -}}
{{- range $k := until (int $n) }}
{{ add $base $k }}@{{ printf "%s-%s-%d.%s-%s" $full $.shard.name $k $full $.shard.name }}:7210@{{ printf "%s-%s-%d.%s-%s" $full $.shard.name $k $full $.shard.name }}:7101
{{- end -}}
{{- end -}}

{{/* A majority of a shard's members (dict "shard" $s "root" $): what its
     PodDisruptionBudget keeps. */}}
{{- define "ringmq.majority" -}}
{{- add (div (int (include "ringmq.shardReplicas" .)) 2) 1 -}}
{{- end -}}

{{- define "ringmq.usersSecret" -}}
{{- default (printf "%s-users" (include "ringmq.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
