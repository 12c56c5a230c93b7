{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "dlpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dlpipe.fullname" -}}
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

{{- define "dlpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: `include "dlpipe.labels" (dict "ctx" $ "component" "ingest")` */}}
{{- define "dlpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dlpipe.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dlpipe.labels" -}}
helm.sh/chart: {{ include "dlpipe.chart" .ctx }}
{{ include "dlpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: dlpipe
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Images ------------------------------------------------------------------------------ */}}

{{- define "dlpipe.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "dlpipe.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "dlpipe.imageTag" .) -}}
{{- end -}}

{{- define "dlpipe.gpuImage" -}}
{{- $tag := default (printf "%s-gpu" (include "dlpipe.imageTag" .)) .Values.retrain.gpu.imageTag -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* Service accounts ---------------------------------------------------------------------- */}}

{{- define "dlpipe.sparkServiceAccountName" -}}
{{- default (printf "%s-spark" (include "dlpipe.fullname" .)) .Values.spark.serviceAccount.name -}}
{{- end -}}

{{- define "dlpipe.servingServiceAccountName" -}}
{{- default (printf "%s-serving" (include "dlpipe.fullname" .)) .Values.serving.serviceAccount.name -}}
{{- end -}}

{{/* Credentials: only ever a reference to the existing Secret. */}}
{{- define "dlpipe.existingSecret" -}}
{{- required "s3.existingSecret is required: create a Secret with the S3 access and secret key (docs/deploy.md) and set its name" .Values.s3.existingSecret -}}
{{- end -}}

{{/* The S3 Secret of one workload: its own from s3.componentSecrets (least privilege), else
s3.existingSecret. `include "dlpipe.s3Secret" (dict "ctx" $ "component" "ingest")` */}}
{{- define "dlpipe.s3Secret" -}}
{{- $own := index (.ctx.Values.s3.componentSecrets | default dict) .component -}}
{{- if $own }}{{ $own }}{{ else }}{{ include "dlpipe.existingSecret" .ctx }}{{ end -}}
{{- end -}}

{{/* Configuration as environment variables --------------------------------------------- */}}

{{/* Plain settings as a name -> value map (Spark `envVars`, and the Deployments' `env`). */}}
{{- define "dlpipe.configEnv" -}}
DLPIPE_CONFIG: {{ .Values.configPath | quote }}
DLPIPE_S3_ENDPOINT: {{ .Values.s3.endpoint | quote }}
DLPIPE_KAFKA_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
DLPIPE__S3__REGION: {{ .Values.s3.region | quote }}
DLPIPE__S3__PATH_STYLE: {{ .Values.s3.pathStyle | toString | quote }}
DLPIPE__BUCKETS__LAKE: {{ .Values.buckets.lake | quote }}
DLPIPE__BUCKETS__DATASETS: {{ .Values.buckets.datasets | quote }}
DLPIPE__BUCKETS__MODELS: {{ .Values.buckets.models | quote }}
DLPIPE__BUCKETS__CHECKPOINTS: {{ .Values.buckets.checkpoints | quote }}
DLPIPE__TABLES__CLEAN: {{ printf "s3a://%s/tables/clean_images" .Values.buckets.lake | quote }}
DLPIPE__TABLES__QUARANTINE: {{ printf "s3a://%s/tables/quarantine" .Values.buckets.lake | quote }}
DLPIPE__TABLES__INGEST_BATCHES: {{ printf "s3a://%s/tables/ingest_batches" .Values.buckets.lake | quote }}
DLPIPE__TABLES__PREDICTIONS: {{ printf "s3a://%s/tables/predictions" .Values.buckets.lake | quote }}
DLPIPE__TABLES__SERVED_SAMPLES: {{ printf "s3a://%s/tables/served_samples" .Values.buckets.lake | quote }}
DLPIPE__DRIFT__CHECKPOINT: {{ printf "s3a://%s/drift/served-samples" .Values.buckets.checkpoints | quote }}
DLPIPE__INGEST__CHECKPOINT: {{ printf "s3a://%s/ingest/raw-images" .Values.buckets.checkpoints | quote }}
DLPIPE__KAFKA__TOPICS__RAW__NAME: {{ .Values.kafka.rawTopic | quote }}
DLPIPE__TRAINING__MODEL_NAME: {{ .Values.model.name | quote }}
DLPIPE__EXPORT__READER__CACHE_DIR: "/tmp/dlpipe/shards"
DLPIPE__TRACKING__ENABLED: {{ ne .Values.tracking.uri "" | toString | quote }}
{{- with .Values.tracking.uri }}
DLPIPE__TRACKING__URI: {{ . | quote }}
{{- end }}
DLPIPE__MONITORING__HOST: "0.0.0.0"
DLPIPE__MONITORING__INGEST_PORT: {{ .Values.monitoring.ingestMetricsPort | toString | quote }}
DLPIPE__MONITORING__OTLP_ENDPOINT: {{ .Values.monitoring.otlpEndpoint | quote }}
DLPIPE__MONITORING__TARGETS_DIR: "/tmp/dlpipe/targets"
HOME: "/tmp"
{{- range $key, $value := .Values.configOverrides }}
{{ printf "DLPIPE__%s" ($key | upper | replace "." "__") }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* The same settings plus the credentials, as a container `env` list. */}}
{{- define "dlpipe.containerEnv" -}}
{{- range $name, $value := (include "dlpipe.configEnv" . | fromYaml) }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{ include "dlpipe.credentialEnv" . }}
{{- end -}}

{{- define "dlpipe.credentialEnv" -}}
- name: DLPIPE_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "dlpipe.s3Secret" (dict "ctx" . "component" "serving") }}
      key: {{ .Values.s3.accessKeyKey }}
- name: DLPIPE_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "dlpipe.s3Secret" (dict "ctx" . "component" "serving") }}
      key: {{ .Values.s3.secretKeyKey }}
{{- end -}}

{{/* Spark pods ------------------------------------------------------------------------ */}}

{{/*
Fields shared by every driver and executor: `include "dlpipe.sparkPod" (dict "ctx" $ "component"
"ingest" "role" "driver" "pod" .Values.ingest.driver "nodeSelector" ... "tolerations" ...)`.
The operator turns cores (or coreRequest)/coreLimit/memory(+overhead) into the pod's requests
and limits.
*/}}
{{- define "dlpipe.sparkPod" -}}
{{- $ctx := .ctx -}}
cores: {{ .pod.cores }}
{{- with .pod.coreRequest }}
{{- /* a fraction of a core (Spark's cores stay whole): small nodes, several apps at once */}}
coreRequest: {{ . | quote }}
{{- end }}
coreLimit: {{ .pod.coreLimit | quote }}
memory: {{ .pod.memory | quote }}
{{- with .pod.memoryOverhead }}
memoryOverhead: {{ . | quote }}
{{- end }}
{{- if eq .role "driver" }}
serviceAccount: {{ include "dlpipe.sparkServiceAccountName" $ctx }}
{{- end }}
labels:
  {{- include "dlpipe.labels" (dict "ctx" $ctx "component" .component) | nindent 2 }}
  {{- /* what the Spark NetworkPolicy admits traffic between */}}
  dlpipe.io/spark: "true"
envVars:
  {{- include "dlpipe.configEnv" $ctx | nindent 2 }}
envSecretKeyRefs:
  {{- /* DLPIPE_S3_* for dlpipe's Python; AWS_* for S3A's EnvironmentVariableCredentialsProvider
  in the driver and executor JVMs: the keys are never in the Spark conf. */}}
  {{- range $name := list "DLPIPE_S3_ACCESS_KEY" "AWS_ACCESS_KEY_ID" }}
  {{ $name }}:
    name: {{ include "dlpipe.s3Secret" (dict "ctx" $ctx "component" $.component) }}
    key: {{ $ctx.Values.s3.accessKeyKey }}
  {{- end }}
  {{- range $name := list "DLPIPE_S3_SECRET_KEY" "AWS_SECRET_ACCESS_KEY" }}
  {{ $name }}:
    name: {{ include "dlpipe.s3Secret" (dict "ctx" $ctx "component" $.component) }}
    key: {{ $ctx.Values.s3.secretKeyKey }}
  {{- end }}
podSecurityContext:
  {{- toYaml $ctx.Values.podSecurityContext | nindent 2 }}
securityContext:
  {{- toYaml $ctx.Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Spec fields shared by every SparkApplication (and scheduled template). */}}
{{- define "dlpipe.sparkAppCommon" -}}
type: Python
pythonVersion: {{ .Values.spark.pythonVersion | quote }}
mode: cluster
image: {{ include "dlpipe.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - {{ .name }}
  {{- end }}
{{- end }}
sparkVersion: {{ .Values.spark.version | quote }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .Values.spark.tmpSizeLimit }}
{{- end -}}
