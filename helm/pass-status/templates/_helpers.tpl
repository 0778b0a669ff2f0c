{{/* Chart name. */}}
{{- define "pass-status.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release + chart name, unless the release name already contains it. */}}
{{- define "pass-status.fullname" -}}
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

{{- define "pass-status.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the consumer pods. */}}
{{- define "pass-status.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pass-status.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: consumer
{{- end }}

{{/* Labels of every object (without component). */}}
{{- define "pass-status.baseLabels" -}}
helm.sh/chart: {{ include "pass-status.chart" . }}
app.kubernetes.io/name: {{ include "pass-status.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pass-status
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of the consumer's objects. */}}
{{- define "pass-status.labels" -}}
{{ include "pass-status.baseLabels" . }}
app.kubernetes.io/component: consumer
{{- end }}

{{- define "pass-status.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pass-status.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pass-status.secretName" -}}
{{- default (include "pass-status.fullname" .) .Values.existingSecret.name }}
{{- end }}

{{- define "pass-status.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the Kafka security protocol uses SASL; fails on an unknown protocol. */}}
{{- define "pass-status.kafkaSasl" -}}
{{- $p := .Values.kafka.securityProtocol }}
{{- if not (has $p (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) }}
{{- fail (printf "kafka.securityProtocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, not %q" $p) }}
{{- end }}
{{- if hasPrefix "SASL_" $p }}
{{- if not (has .Values.kafka.sasl.mechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) }}
{{- fail (printf "kafka.sasl.mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with %s, not %q" $p .Values.kafka.sasl.mechanism) }}
{{- end }}
{{- if and (not .Values.kafka.sasl.username) (not .Values.existingSecret.kafkaSaslUsernameKey) }}
{{- fail "kafka.sasl.username or existingSecret.kafkaSaslUsernameKey is required with a SASL_* kafka.securityProtocol" }}
{{- end }}
{{- true }}
{{- end }}
{{- end }}

{{/* "true" when the Kafka connection uses TLS. */}}
{{- define "pass-status.kafkaTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}{{ true }}{{ end }}
{{- end }}

{{/*
Environment of a container. Called with (dict "root" $ "component" "consumer"|"tick"). Plain
settings are collected in a dict, the `env` value is merged over them, and the result is
rendered sorted by name; secrets come only from secretKeyRef of the existing Secret. The tick
CronJobs only publish to Kafka: they get no MongoDB setting and no MongoDB credentials.
*/}}
{{- define "pass-status.env" -}}
{{- $root := .root }}
{{- $consumer := eq .component "consumer" }}
{{- $V := $root.Values }}
{{- $sasl := include "pass-status.kafkaSasl" $root }}
{{- $c := $V.consumer }}
{{- $t := $V.kafka.topics }}
{{- $env := dict
  "PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS" $V.kafka.bootstrapServers
  "PASS_STATUS_KAFKA_SECURITY_PROTOCOL" $V.kafka.securityProtocol
  "PASS_STATUS_GROUP_ID" $V.kafka.groupId
  "PASS_STATUS_HTTP_PORT" $V.httpPort
  "PASS_STATUS_TOPIC_TICKET_USED" $t.ticketUsed
  "PASS_STATUS_TOPIC_TICK" $t.tick
  "PASS_STATUS_TOPIC_STATUS_CHANGED" $t.statusChanged
  "PASS_STATUS_TOPIC_CHECK_LOG" $t.checkLog
  "PASS_STATUS_TOPIC_DEAD_LETTER" $t.deadLetter
  "PASS_STATUS_LOG_LEVEL" $c.logLevel
  "PASS_STATUS_SHUTDOWN_GRACE_SECONDS" $c.shutdownGraceSeconds
  "PASS_STATUS_MAX_BATCH_RECORDS" $c.maxBatchRecords
  "PASS_STATUS_USER_CONCURRENCY" $c.userConcurrency
  "PASS_STATUS_CHECK_LOG_INTERVAL_SECONDS" $c.checkLogIntervalSeconds
  "PASS_STATUS_TICK_SHARDS" $c.tickShards
  "PASS_STATUS_LIVENESS_MAX_STALL_SECONDS" $c.livenessMaxStallSeconds
}}
{{- if $consumer }}
{{- $_ := set $env "PASS_STATUS_MONGODB_DATABASE" $V.mongodb.database }}
{{- if $V.mongodb.ca.name }}
{{- $_ := set $env "PASS_STATUS_MONGODB_TLS_CAFILE" (printf "/etc/pass-status/mongodb-ca/%s" $V.mongodb.ca.key) }}
{{- end }}
{{- end }}
{{- if $sasl }}
{{- $_ := set $env "PASS_STATUS_KAFKA_SASL_MECHANISM" $V.kafka.sasl.mechanism }}
{{- if not $V.existingSecret.kafkaSaslUsernameKey }}
{{- $_ := set $env "PASS_STATUS_KAFKA_SASL_USERNAME" $V.kafka.sasl.username }}
{{- end }}
{{- end }}
{{- if $V.kafka.ca.name }}
{{- $_ := set $env "PASS_STATUS_KAFKA_SSL_CAFILE" (printf "/etc/pass-status/kafka-ca/%s" $V.kafka.ca.key) }}
{{- end }}
{{- if include "pass-status.kafkaClientCert" $root }}
{{- $_ := set $env "PASS_STATUS_KAFKA_SSL_CERTFILE" (printf "/etc/pass-status/kafka-client-cert/%s" $V.kafka.clientCert.certKey) }}
{{- $_ := set $env "PASS_STATUS_KAFKA_SSL_KEYFILE" (printf "/etc/pass-status/kafka-client-cert/%s" $V.kafka.clientCert.keyKey) }}
{{- end }}
{{- $secretNames := list "PASS_STATUS_MONGODB_URI" "PASS_STATUS_KAFKA_SASL_PASSWORD" "PASS_STATUS_KAFKA_SASL_USERNAME" }}
{{- range $k, $v := $V.env }}
{{- if has $k $secretNames }}
{{- fail (printf "env.%s is a secret setting: put it in the existing Secret (see existingSecret), not in values" $k) }}
{{- end }}
{{- $_ := set $env $k $v }}
{{- end }}
{{- range $V.extraEnv }}
{{- if and (has .name $secretNames) (hasKey . "value") }}
{{- fail (printf "extraEnv %s is a secret setting given as a literal value: use valueFrom.secretKeyRef (or existingSecret), never a value in values" .name) }}
{{- end }}
{{- end }}
{{- $files := $V.existingSecret.mountAsFiles }}
{{- range $k, $v := $env }}
- name: {{ $k }}
  value: {{ toString $v | quote }}
{{- end }}
{{- if $consumer }}
{{- $key := required "existingSecret.mongodbUriKey is required" $V.existingSecret.mongodbUriKey }}
{{- if $files }}
- name: PASS_STATUS_MONGODB_URI_FILE
  value: {{ printf "/etc/pass-status/secrets/%s" $key | quote }}
{{- else }}
- name: PASS_STATUS_MONGODB_URI
  valueFrom:
    secretKeyRef:
      name: {{ include "pass-status.secretName" $root }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- if $sasl }}
{{- with $V.existingSecret.kafkaSaslUsernameKey }}
- name: PASS_STATUS_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "pass-status.secretName" $root }}
      key: {{ . }}
{{- end }}
{{- $key := required "existingSecret.kafkaSaslPasswordKey is required with SASL" $V.existingSecret.kafkaSaslPasswordKey }}
{{- if $files }}
- name: PASS_STATUS_KAFKA_SASL_PASSWORD_FILE
  value: {{ printf "/etc/pass-status/secrets/%s" $key | quote }}
{{- else }}
- name: PASS_STATUS_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "pass-status.secretName" $root }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- if $consumer }}
{{- with $V.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when a Kafka client certificate is configured; it needs a TLS protocol. */}}
{{- define "pass-status.kafkaClientCert" -}}
{{- if .Values.kafka.clientCert.secretName }}
{{- if not (include "pass-status.kafkaTls" .) }}
{{- fail "kafka.clientCert needs kafka.securityProtocol SSL or SASL_SSL (mutual TLS)" }}
{{- end }}
{{- true }}
{{- end }}
{{- end }}

{{/*
Volumes of a pod, called like pass-status.env: /tmp, the CA bundles and the Kafka client
certificate (tick jobs: no MongoDB CA), and for the consumer the extraVolumes.
*/}}
{{- define "pass-status.volumes" -}}
{{- $V := .root.Values }}
{{- $consumer := eq .component "consumer" }}
- name: tmp
  emptyDir:
    sizeLimit: {{ $V.tmpSizeLimit }}
{{- $cas := dict "kafka-ca" $V.kafka.ca }}
{{- if $consumer }}
{{- $_ := set $cas "mongodb-ca" $V.mongodb.ca }}
{{- end }}
{{- range $name, $ca := $cas }}
{{- if $ca.name }}
- name: {{ $name }}
{{- if eq $ca.kind "ConfigMap" }}
  configMap:
    name: {{ $ca.name }}
    items:
      - key: {{ $ca.key }}
        path: {{ $ca.key }}
{{- else if eq $ca.kind "Secret" }}
  secret:
    secretName: {{ $ca.name }}
    items:
      - key: {{ $ca.key }}
        path: {{ $ca.key }}
{{- else }}
{{- fail (printf "ca.kind must be Secret or ConfigMap, not %q" $ca.kind) }}
{{- end }}
{{- end }}
{{- end }}
{{- $secretKeys := include "pass-status.secretFileKeys" (dict "root" .root "component" .component) | fromJsonArray }}
{{- if $secretKeys }}
- name: secrets
  secret:
    secretName: {{ include "pass-status.secretName" .root }}
    defaultMode: 0400
    items:
      {{- range $secretKeys }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- if include "pass-status.kafkaClientCert" .root }}
- name: kafka-client-cert
  secret:
    secretName: {{ $V.kafka.clientCert.secretName }}
    defaultMode: 0400
    items:
      - key: {{ $V.kafka.clientCert.certKey }}
        path: {{ $V.kafka.clientCert.certKey }}
      - key: {{ $V.kafka.clientCert.keyKey }}
        path: {{ $V.kafka.clientCert.keyKey }}
{{- end }}
{{- if $consumer }}
{{- with $V.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pass-status.volumeMounts" -}}
{{- $V := .root.Values }}
{{- $consumer := eq .component "consumer" }}
- name: tmp
  mountPath: /tmp
{{- $cas := dict "kafka-ca" $V.kafka.ca }}
{{- if $consumer }}
{{- $_ := set $cas "mongodb-ca" $V.mongodb.ca }}
{{- end }}
{{- range $name, $ca := $cas }}
{{- if $ca.name }}
- name: {{ $name }}
  mountPath: /etc/pass-status/{{ $name }}
  readOnly: true
{{- end }}
{{- end }}
{{- if include "pass-status.secretFileKeys" (dict "root" .root "component" .component) | fromJsonArray }}
- name: secrets
  mountPath: /etc/pass-status/secrets
  readOnly: true
{{- end }}
{{- if include "pass-status.kafkaClientCert" .root }}
- name: kafka-client-cert
  mountPath: /etc/pass-status/kafka-client-cert
  readOnly: true
{{- end }}
{{- if $consumer }}
{{- with $V.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-spec fields common to the consumer and the CronJobs. */}}
{{- define "pass-status.podCommon" -}}
{{- include "pass-status.checkKubeVersion" . }}
serviceAccountName: {{ include "pass-status.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
# No Service environment variables: Kubernetes would inject PASS_STATUS_* look-alikes for a
# Service named pass-status, which the service reports as unknown settings.
enableServiceLinks: false
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/*
Keys of the existing Secret mounted as files (existingSecret.mountAsFiles), as a JSON list:
the MongoDB URI for the consumer, the SASL password with a SASL protocol.
*/}}
{{- define "pass-status.secretFileKeys" -}}
{{- $V := .root.Values }}
{{- $keys := list }}
{{- if $V.existingSecret.mountAsFiles }}
{{- if eq .component "consumer" }}
{{- $keys = append $keys $V.existingSecret.mongodbUriKey }}
{{- end }}
{{- if include "pass-status.kafkaSasl" .root }}
{{- $keys = append $keys $V.existingSecret.kafkaSaslPasswordKey }}
{{- end }}
{{- end }}
{{- toJson $keys }}
{{- end }}

{{/*
Fails below Kubernetes 1.27. Without a cluster (helm template without --kube-version) helm
reports its built-in v1.20.0: defaultKubeVersion stands in for it, so the chart renders
without flags. (Chart.yaml has no kubeVersion for that reason: helm would refuse first.)
*/}}
{{- define "pass-status.kubeVersion" -}}
{{- $v := .Capabilities.KubeVersion.Version }}
{{- if eq $v "v1.20.0" }}{{ $v = .Values.defaultKubeVersion }}{{ end }}
{{- $v }}
{{- end }}

{{- define "pass-status.checkKubeVersion" -}}
{{- $v := include "pass-status.kubeVersion" . }}
{{- if semverCompare "<1.27.0-0" $v }}
{{- fail (printf "pass-status needs Kubernetes 1.27 or later, not %s" $v) }}
{{- end }}
{{- end }}

{{/*
Replicas the consumer runs at least: replicaCount, or autoscaling.minReplicas with an
autoscaler (HPA or KEDA).
*/}}
{{- define "pass-status.minReplicas" -}}
{{- if eq .Values.autoscaling.mode "none" }}{{ .Values.replicaCount }}{{ else }}{{ .Values.autoscaling.minReplicas }}{{ end }}
{{- end }}

{{/* Scheduling of every pod (consumer and tick jobs): the same knobs for both. */}}
{{- define "pass-status.podScheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
