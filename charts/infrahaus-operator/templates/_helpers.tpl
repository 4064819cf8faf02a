{{/* The chart name, shortened to a DNS label. */}}
{{- define "infrahaus-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of the release's objects. */}}
{{- define "infrahaus-operator.fullname" -}}
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

{{- define "infrahaus-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infrahaus-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "infrahaus-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "infrahaus-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "infrahaus-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "infrahaus-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Leader election is on when asked for, and always with more than one replica. */}}
{{- define "infrahaus-operator.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) -}}
true
{{- end -}}
{{- end -}}

{{- define "infrahaus-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* REDIS_URL for the controller and the dashboard, when Redis is configured. */}}
{{- define "infrahaus-operator.redisEnv" -}}
{{- if .Values.redis.url -}}
- name: REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- else if .Values.redis.existingSecret.name -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret.name }}
      key: {{ .Values.redis.existingSecret.key }}
{{- end -}}
{{- if .Values.redis.caConfigMap.name }}
- name: REDIS_CA_FILE
  value: /etc/infrahaus/redis-ca/{{ .Values.redis.caConfigMap.key }}
{{- end -}}
{{- end -}}

{{/* The Redis CA's volume mount and volume, when redis.caConfigMap names one. */}}
{{- define "infrahaus-operator.redisCaMount" -}}
{{- if .Values.redis.caConfigMap.name -}}
volumeMounts:
  - name: redis-ca
    mountPath: /etc/infrahaus/redis-ca
    readOnly: true
{{- end -}}
{{- end -}}

{{- define "infrahaus-operator.redisCaVolume" -}}
{{- if .Values.redis.caConfigMap.name -}}
volumes:
  - name: redis-ca
    configMap:
      name: {{ .Values.redis.caConfigMap.name }}
{{- end -}}
{{- end -}}

{{/* The dashboard's objects' name. */}}
{{- define "infrahaus-operator.dashboardName" -}}
{{- printf "%s-dashboard" (include "infrahaus-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A name of its own, so neither the controller's Deployment nor its metrics Service selects dashboard pods. */}}
{{- define "infrahaus-operator.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-dashboard" (include "infrahaus-operator.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "infrahaus-operator.dashboardLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "infrahaus-operator.dashboardSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: dashboard
{{- end -}}

{{- define "infrahaus-operator.dashboardServiceAccountName" -}}
{{- if .Values.dashboard.serviceAccount.create -}}
{{- default (include "infrahaus-operator.dashboardName" .) .Values.dashboard.serviceAccount.name -}}
{{- else -}}
{{- required "dashboard.serviceAccount.name is required when dashboard.serviceAccount.create is false" .Values.dashboard.serviceAccount.name -}}
{{- end -}}
{{- end -}}
