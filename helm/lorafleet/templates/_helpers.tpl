{{/*
Names. The RayService is named by "lorafleet.fullname"; KubeRay derives
<name>-serve-svc, <name>-head-svc and <name>-raycluster-<suffix> from it, hence the
40-character cap (Kubernetes names stop at 63).
*/}}
{{- define "lorafleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "lorafleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* KubeRay's Service for the Serve HTTP proxies (the OpenAI endpoint). */}}
{{- define "lorafleet.serveServiceName" -}}
{{- printf "%s-serve-svc" (include "lorafleet.fullname" .) }}
{{- end }}

{{- define "lorafleet.adapterClaimName" -}}
{{- if .Values.adapterStorage.pvc.create }}
{{- printf "%s-adapters" (include "lorafleet.fullname" .) }}
{{- else }}
{{- .Values.adapterStorage.pvc.existingClaim }}
{{- end }}
{{- end }}

{{- define "lorafleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lorafleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lorafleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "lorafleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lorafleet
{{- end }}

{{- define "lorafleet.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}

{{/*
Checks the schema cannot express: they need two values at once. Each message names the
values to change.
*/}}
{{- define "lorafleet.validate" -}}
{{- $lf := .Values.lorafleet }}
{{- $src := $lf.model.source }}
{{- if ne $lf.server.host "0.0.0.0" }}
{{- fail (printf "lorafleet.server.host must be 0.0.0.0 in Kubernetes (got %q): the Serve proxy must accept traffic from KubeRay's serve Service" $lf.server.host) }}
{{- end }}
{{- if le (float64 $lf.deployment.ingress_cpus) 0.0 }}
{{- fail "lorafleet.deployment.ingress_cpus must be > 0 in Kubernetes: with 0 CPUs an ingress replica may land on the head pod, which mounts no model or adapter storage" }}
{{- end }}
{{- $type := .Values.modelStorage.type }}
{{- if eq $type "hub" }}
{{- if or (hasPrefix "/" $src) (contains "://" $src) }}
{{- fail (printf "modelStorage.type is hub, but lorafleet.model.source %q is not a hub id (org/name); use modelStorage.type pvc for a path or s3 for an s3:// URI" $src) }}
{{- end }}
{{- else if eq $type "pvc" }}
{{- if not .Values.modelStorage.pvc.claimName }}
{{- fail "modelStorage.type is pvc: set modelStorage.pvc.claimName to the PVC holding the model" }}
{{- end }}
{{- $mount := trimSuffix "/" .Values.modelStorage.pvc.mountPath }}
{{- if not (or (eq $src $mount) (hasPrefix (printf "%s/" $mount) $src)) }}
{{- fail (printf "modelStorage.type is pvc: lorafleet.model.source %q must be a path under modelStorage.pvc.mountPath %q" $src $mount) }}
{{- end }}
{{- else if eq $type "s3" }}
{{- if not (hasPrefix "s3://" $src) }}
{{- fail (printf "modelStorage.type is s3: lorafleet.model.source %q must be an s3:// URI" $src) }}
{{- end }}
{{- end }}
{{- $uri := $lf.adapters.uri }}
{{- if eq .Values.adapterStorage.type "pvc" }}
{{- if not (hasPrefix "/" $uri) }}
{{- fail (printf "adapterStorage.type is pvc: lorafleet.adapters.uri %q must be the absolute path the volume is mounted at" $uri) }}
{{- end }}
{{- if and (not .Values.adapterStorage.pvc.create) (not .Values.adapterStorage.pvc.existingClaim) }}
{{- fail "adapterStorage.pvc.create is false: set adapterStorage.pvc.existingClaim to a ReadWriteMany PVC" }}
{{- end }}
{{- else if not (hasPrefix "s3://" $uri) }}
{{- fail (printf "adapterStorage.type is s3: lorafleet.adapters.uri %q must be an s3://bucket/prefix URI" $uri) }}
{{- end }}
{{- range .Values.workerGroups }}
{{- if or (gt (int .minReplicas) (int .replicas)) (gt (int .replicas) (int .maxReplicas)) }}
{{- fail (printf "workerGroups[%s]: need minReplicas <= replicas <= maxReplicas (got %v <= %v <= %v)" .name .minReplicas .replicas .maxReplicas) }}
{{- end }}
{{- end }}
{{- $names := list }}
{{- range .Values.workerGroups }}{{ $names = append $names .name }}{{ end }}
{{- if ne (len $names) (len (uniq $names)) }}
{{- fail (printf "workerGroups: group names must be unique (got %s)" (join ", " $names)) }}
{{- end }}
{{- /* The engine replicas that must run at once have to fit the GPUs the groups can reach. */}}
{{- $gpuCapacity := 0.0 }}
{{- range .Values.workerGroups }}{{ $gpuCapacity = addf $gpuCapacity (mulf .maxReplicas .gpus) }}{{ end }}
{{- $replicas := $lf.deployment.num_replicas }}
{{- $as := .Values.autoscaling.engineReplicas }}
{{- if $as.enabled }}
{{- $replicas = $as.minReplicas }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail (printf "autoscaling.engineReplicas: minReplicas (%v) must be <= maxReplicas (%v)" $as.minReplicas $as.maxReplicas) }}
{{- end }}
{{- $perReplica := $lf.deployment.max_ongoing_requests | default $lf.engine.max_num_seqs }}
{{- if gt (float64 $as.targetOngoingRequests) (float64 $perReplica) }}
{{- fail (printf "autoscaling.engineReplicas.targetOngoingRequests (%v) must be <= lorafleet.deployment.max_ongoing_requests (%v; unset: engine.max_num_seqs), or Ray Serve never scales up" $as.targetOngoingRequests $perReplica) }}
{{- end }}
{{- end }}
{{- $gpusNeeded := mulf $replicas $lf.deployment.replica_gpus }}
{{- if gt $gpusNeeded $gpuCapacity }}
{{- fail (printf "%v engine replicas x %v GPUs (lorafleet.deployment.replica_gpus) need %v GPUs, but workerGroups reach at most %v (sum of maxReplicas x gpus)" $replicas $lf.deployment.replica_gpus $gpusNeeded $gpuCapacity) }}
{{- end }}
{{- end }}

{{/*
serveConfigV2: the Ray Serve config KubeRay applies. applications[0].args is the
`lorafleet:` values block verbatim, i.e. the same document `lorafleet serve --config`
reads, validated by deployments.config in build_app.
*/}}
{{- define "lorafleet.serveConfig" -}}
{{- $lf := deepCopy .Values.lorafleet }}
{{- /* API auth follows the top-level `auth` values: the keys file is the Secret's key mounted at auth.mountPath. */}}
{{- $auth := dict "enabled" .Values.auth.enabled }}
{{- if .Values.auth.enabled }}
{{- $_ := set $auth "keys_file" (printf "%s/%s" (trimSuffix "/" .Values.auth.mountPath) .Values.auth.keysFileKey) }}
{{- end }}
{{- $_ := set $lf.server "auth" $auth }}
{{- $as := .Values.autoscaling.engineReplicas -}}
http_options:
  host: {{ $lf.server.host | quote }}
  port: {{ $lf.server.port | toJson }}
  request_timeout_s: {{ $lf.server.request_timeout_s | toJson }}
applications:
  - name: lorafleet
    import_path: deployments.app:build_app
    route_prefix: /
    args:
      {{- toYaml $lf | nindent 6 }}
    {{- if $as.enabled }}
    deployments:
      - name: EngineReplica
        num_replicas: auto
        autoscaling_config:
          min_replicas: {{ $as.minReplicas | toJson }}
          max_replicas: {{ $as.maxReplicas | toJson }}
          target_ongoing_requests: {{ $as.targetOngoingRequests | toJson }}
          upscale_delay_s: {{ $as.upscaleDelayS | toJson }}
          downscale_delay_s: {{ $as.downscaleDelayS | toJson }}
    {{- end }}
{{- end }}

{{/* Environment of every Ray container: storage credentials and the cache location. */}}
{{- define "lorafleet.env" -}}
{{- $v := .Values }}
{{- if and (eq $v.modelStorage.type "hub") $v.modelStorage.hub.tokenSecret.name }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $v.modelStorage.hub.tokenSecret.name }}
      key: {{ $v.modelStorage.hub.tokenSecret.key }}
{{- end }}
{{- if $v.modelStorage.cache.enabled }}
- name: HF_HOME
  value: {{ $v.modelStorage.cache.mountPath | quote }}
{{- end }}
{{- if or (eq $v.modelStorage.type "s3") (eq $v.adapterStorage.type "s3") }}
{{- if $v.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $v.s3.existingSecret }}
      key: {{ $v.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.s3.existingSecret }}
      key: {{ $v.s3.secretAccessKeyKey }}
{{- end }}
{{- if $v.s3.region }}
- name: AWS_REGION
  value: {{ $v.s3.region | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ $v.s3.region | quote }}
{{- end }}
{{- if $v.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ $v.s3.endpointUrl | quote }}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes of a GPU worker pod; `shmSize` comes from the group. */}}
{{- define "lorafleet.workerVolumes" -}}
{{- $v := .root.Values -}}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .group.shmSize }}
{{- if $v.modelStorage.cache.enabled }}
- name: hf-cache
  emptyDir:
    sizeLimit: {{ $v.modelStorage.cache.sizeLimit }}
{{- end }}
{{- if eq $v.modelStorage.type "pvc" }}
- name: model
  persistentVolumeClaim:
    claimName: {{ $v.modelStorage.pvc.claimName }}
    readOnly: true
{{- end }}
{{- if eq $v.adapterStorage.type "pvc" }}
- name: adapters
  persistentVolumeClaim:
    claimName: {{ include "lorafleet.adapterClaimName" .root }}
{{- end }}
{{- include "lorafleet.authVolume" .root }}
{{- end }}

{{- define "lorafleet.workerVolumeMounts" -}}
{{- $v := .Values -}}
- name: dshm
  mountPath: /dev/shm
{{- if $v.modelStorage.cache.enabled }}
- name: hf-cache
  mountPath: {{ $v.modelStorage.cache.mountPath }}
{{- end }}
{{- if eq $v.modelStorage.type "pvc" }}
- name: model
  mountPath: {{ $v.modelStorage.pvc.mountPath }}
  readOnly: true
  {{- with $v.modelStorage.pvc.subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}
{{- if eq $v.adapterStorage.type "pvc" }}
- name: adapters
  mountPath: {{ $v.lorafleet.adapters.uri }}
{{- end }}
{{- include "lorafleet.authVolumeMount" . }}
{{- end }}

{{/* API keys: mounted when auth is on and a Secret is named (see values `auth`). */}}
{{- define "lorafleet.authVolume" -}}
{{- if and .Values.auth.enabled .Values.auth.existingSecret }}
- name: api-keys
  secret:
    secretName: {{ .Values.auth.existingSecret }}
{{- end }}
{{- end }}

{{- define "lorafleet.authVolumeMount" -}}
{{- if and .Values.auth.enabled .Values.auth.existingSecret }}
- name: api-keys
  mountPath: {{ .Values.auth.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Pod-level fields shared by head and workers. */}}
{{- define "lorafleet.podCommon" -}}
{{- with .root.Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
