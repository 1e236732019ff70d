{{/*
Names are fixed, as Calico's: a cluster has one pod network, and the CNI plugin's kubeconfig,
the RBAC and the DaemonSet refer to each other by these names.
*/}}
{{- define "tabby.nodeName" -}}tabby-node{{- end -}}
{{- define "tabby.configName" -}}tabby-config{{- end -}}
{{- define "tabby.rrName" -}}tabby-route-reflector{{- end -}}

{{/* Labels every object carries. */}}
{{- define "tabby.labels" -}}
app.kubernetes.io/part-of: tabby
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tabby.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* An encapsulation mode, checked: Always, CrossSubnet or Never. */}}
{{- define "tabby.mode" -}}
{{- $mode := index . 0 -}}
{{- $what := index . 1 -}}
{{- if not (has $mode (list "Always" "CrossSubnet" "Never")) -}}
{{- fail (printf "%s: %q is not Always, CrossSubnet or Never" $what $mode) -}}
{{- end -}}
{{- $mode -}}
{{- end -}}

{{/* Fails on settings that cannot work together; renders nothing. */}}
{{- define "tabby.validate" -}}
{{- $ipip := include "tabby.mode" (list .Values.ipPool.ipipMode "ipPool.ipipMode") -}}
{{- $vxlan := include "tabby.mode" (list .Values.ipPool.vxlanMode "ipPool.vxlanMode") -}}
{{- if and (ne $ipip "Never") (ne $vxlan "Never") -}}
{{- fail "ipPool: ipipMode and vxlanMode cannot both be on (Calico refuses it too): set one of them to Never" -}}
{{- end -}}
{{- if .Values.routeReflector.enabled -}}
{{- if not .Values.routeReflector.nodeSelector -}}
{{- fail "routeReflector.nodeSelector: the reflectors need nodes of their own (tabby-node stays off them)" -}}
{{- end -}}
{{- if lt (int .Values.routeReflector.replicas) 1 -}}
{{- fail "routeReflector.replicas must be at least 1" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The cluster's AS number: asNumber, else Calico's default. */}}
{{- define "tabby.asn" -}}
{{- if .Values.asNumber -}}{{ int64 .Values.asNumber }}{{- else -}}64512{{- end -}}
{{- end -}}

{{/* KUBERNETES_SERVICE_HOST / _PORT when the API server is given explicitly. */}}
{{- define "tabby.apiServerEnv" -}}
{{- with .Values.kubernetesServiceEndpoint }}
{{- if .host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .host | quote }}
{{- end }}
{{- if .port }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .port | quote }}
{{- end }}
{{- end }}
{{- end -}}
