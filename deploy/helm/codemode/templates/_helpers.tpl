{{/* Names, labels and the few values several templates derive alike. */}}

{{- define "codemode.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "codemode.fullname" -}}
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

{{- define "codemode.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "codemode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The server pods; Redis pods carry component=redis instead. */}}
{{- define "codemode.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codemode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "codemode.redis.fullname" -}}
{{- printf "%s-redis" (include "codemode.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "codemode.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codemode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "codemode.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "codemode.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "codemode.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "codemode.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "codemode.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{/* The Secret holding the Redis URL the server uses. */}}
{{- define "codemode.redisUrlSecret" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecret -}}
{{- else -}}
{{- include "codemode.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "codemode.redisUrlKey" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecretKey -}}
{{- else -}}
redis-url
{{- end -}}
{{- end -}}

{{/* "true" when the sessions are shared through Redis (sessionRegistry redis). */}}
{{- define "codemode.sharedSessions" -}}
{{- if eq .Values.sessionRegistry "redis" -}}true{{- end -}}
{{- end -}}

{{/* "true" when the server loads a CA from files (--ca-cert/--ca-key): one given in
sandboxCA, or, with shared sessions, the one the chart generates into its Secret. */}}
{{- define "codemode.sandboxCA.mounted" -}}
{{- if or .Values.sandboxCA.existingSecret .Values.sandboxCA.cert (include "codemode.sharedSessions" .) -}}true{{- end -}}
{{- end -}}

{{/* The pod IP as --internal-advertise's host: in brackets on IPv6 (listenHost "[::]"). */}}
{{- define "codemode.internalAdvertise" -}}
{{- if hasPrefix "[" .Values.server.listenHost -}}
{{- printf "[$(POD_IP)]:%d" (int .Values.server.internalPort) -}}
{{- else -}}
{{- printf "$(POD_IP):%d" (int .Values.server.internalPort) -}}
{{- end -}}
{{- end -}}

{{/* Mount points of the files the server reads (env CODEMODE_*_FILE / _CERT / _KEY). */}}
{{- define "codemode.paths.secrets" -}}/etc/codemode/secrets{{- end -}}
{{- define "codemode.paths.principals" -}}/etc/codemode/principals{{- end -}}
{{- define "codemode.paths.tls" -}}/etc/codemode/tls{{- end -}}
{{- define "codemode.paths.sandboxCA" -}}/etc/codemode/sandbox-ca{{- end -}}
{{- define "codemode.paths.operatorToken" -}}/etc/codemode/operator-token{{- end -}}
{{- define "codemode.paths.data" -}}/var/lib/codemode{{- end -}}

{{/* Refuses combinations the schema cannot express, before anything renders. */}}
{{- define "codemode.validate" -}}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.url) (not .Values.externalRedis.existingSecret) -}}
{{- fail "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret" -}}
{{- end -}}
{{- if and (not .Values.auth.principals) (not .Values.auth.existingSecret) (not .Values.auth.operatorToken.enabled) -}}
{{- fail "no principals: set auth.principals, auth.existingSecret or auth.operatorToken.enabled (without them every replica would invent its own local-admin token)" -}}
{{- end -}}
{{- if and (not .Values.tls.existingSecret) (not .Values.tls.generate) -}}
{{- fail "the API port needs TLS: set tls.existingSecret or tls.generate" -}}
{{- end -}}
{{- if and .Values.sandboxCA.cert (not .Values.sandboxCA.key) -}}
{{- fail "sandboxCA.cert needs sandboxCA.key" -}}
{{- end -}}
{{- if eq (int .Values.server.port) (int .Values.server.healthPort) -}}
{{- fail "server.port and server.healthPort must differ" -}}
{{- end -}}
{{- if include "codemode.sharedSessions" . -}}
{{- $internal := int .Values.server.internalPort -}}
{{- if or (eq $internal (int .Values.server.port)) (eq $internal (int .Values.server.healthPort)) (and .Values.metrics.enabled (eq $internal (int .Values.metrics.port))) -}}
{{- fail "server.internalPort must differ from server.port, server.healthPort and metrics.port" -}}
{{- end -}}
{{- end -}}
{{- end -}}
