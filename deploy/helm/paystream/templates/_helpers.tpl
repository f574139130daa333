{{- define "paystream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "paystream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "paystream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "paystream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: paystream
{{- end -}}

{{/* Selector labels of one role: (dict "root" $ "role" "gateway") */}}
{{- define "paystream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paystream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "paystream.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end -}}

{{- define "paystream.secretName" -}}
{{- default (printf "%s-secrets" (include "paystream.fullname" .)) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "paystream.configName" -}}
{{- printf "%s-config" (include "paystream.fullname" .) -}}
{{- end -}}

{{/* An env entry from the Secret: (dict "root" $ "key" "PAYSTREAM_POSTGRES_URL") */}}
{{- define "paystream.secretEnv" -}}
- name: {{ .key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "paystream.secretName" .root }}
      key: {{ .key }}
{{- end -}}

{{- define "paystream.acquirerUrl" -}}
{{- if .Values.workers.processor.acquirerUrl -}}
{{- .Values.workers.processor.acquirerUrl -}}
{{- else if .Values.acquirerSim.enabled -}}
{{- printf "http://%s-acquirer-sim:%d" (include "paystream.fullname" .) (int .Values.acquirerSim.port) -}}
{{- else -}}
{{- fail "workers.processor.acquirerUrl is required when acquirerSim.enabled is false" -}}
{{- end -}}
{{- end -}}

{{/* Prefixed topic name: (dict "root" $ "topic" "tx.initiated") */}}
{{- define "paystream.topic" -}}
{{- printf "%s%s" .root.Values.config.topicPrefix .topic -}}
{{- end -}}

{{/* Pod-level settings shared by every role. */}}
{{- define "paystream.podCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Probes on a named port: (dict "root" $ "port" "http") */}}
{{- define "paystream.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: {{ .root.Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .root.Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: {{ .root.Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .root.Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .root.Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: {{ .root.Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .root.Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .root.Values.probes.readiness.failureThreshold }}
{{- end -}}
