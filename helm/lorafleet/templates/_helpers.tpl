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

{{- define "lorafleet.modelCacheClaimName" -}}
{{- default (printf "%s-model-cache" (include "lorafleet.fullname" .)) .Values.modelStorage.cache.persistence.existingClaim }}
{{- end }}

{{- define "lorafleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lorafleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The bundled PostgreSQL: its StatefulSet, Service and DSN Secret share this name. */}}
{{- define "lorafleet.postgresName" -}}
{{- printf "%s-postgresql" (include "lorafleet.fullname" .) }}
{{- end }}

{{/* The Secret and key holding the usage ledger's DSN ("" name: no PostgreSQL ledger). */}}
{{- define "lorafleet.ledgerDsnSecret" -}}
{{- $pg := .Values.usageLedger.postgres }}
{{- if eq .Values.usageLedger.backend "postgres" }}
{{- if $pg.bundled.enabled }}{{ include "lorafleet.postgresName" . }}{{ else }}{{ $pg.existingSecret }}{{ end }}
{{- end }}
{{- end }}

{{- define "lorafleet.ledgerDsnKey" -}}
{{- if .Values.usageLedger.postgres.bundled.enabled }}dsn{{ else }}{{ .Values.usageLedger.postgres.dsnKey }}{{ end }}
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

{{/* `<namespace>/<release>`: the `lorafleet_release` label the PodMonitor puts on every series. */}}
{{- define "lorafleet.releaseLabel" -}}
{{- printf "%s/%s" .Release.Namespace .Release.Name }}
{{- end }}

{{/* The image tag defaults to the chart's appVersion: the GPU image of this release. */}}
{{- define "lorafleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "%s-gpu" .Chart.AppVersion) .Values.image.tag) }}
{{- end }}

{{/*
Checks the schema cannot express: they need two values at once. Each message names the
values to change.
*/}}
{{- define "lorafleet.validate" -}}
{{- $lf := .Values.lorafleet }}
{{- /* One base (`model:`) or several (`model: null` and `models:`): every source is checked against modelStorage. */}}
{{- if and $lf.model $lf.models }}
{{- fail "lorafleet: give either model (one base) or models (several; set model: null to drop the chart's default), not both" }}
{{- end }}
{{- $bases := $lf.models | default (list $lf.model) }}
{{- if ne $lf.server.host "0.0.0.0" }}
{{- fail (printf "lorafleet.server.host must be 0.0.0.0 in Kubernetes (got %q): the Serve proxy must accept traffic from KubeRay's serve Service" $lf.server.host) }}
{{- end }}
{{- if le (float64 $lf.deployment.ingress_cpus) 0.0 }}
{{- fail "lorafleet.deployment.ingress_cpus must be > 0 in Kubernetes: with 0 CPUs an ingress replica may land on the head pod, which mounts no model or adapter storage" }}
{{- end }}
{{- $type := .Values.modelStorage.type }}
{{- range $bases }}
{{- $src := .source }}
{{- if eq $type "hub" }}
{{- if or (hasPrefix "/" $src) (contains "://" $src) }}
{{- fail (printf "modelStorage.type is hub, but lorafleet.model.source %q is not a hub id (org/name); use modelStorage.type pvc for a path or s3 for an s3:// URI" $src) }}
{{- end }}
{{- else if eq $type "pvc" }}
{{- if not $.Values.modelStorage.pvc.claimName }}
{{- fail "modelStorage.type is pvc: set modelStorage.pvc.claimName to the PVC holding the model" }}
{{- end }}
{{- $mount := trimSuffix "/" $.Values.modelStorage.pvc.mountPath }}
{{- if not (or (eq $src $mount) (hasPrefix (printf "%s/" $mount) $src)) }}
{{- fail (printf "modelStorage.type is pvc: lorafleet.model.source %q must be a path under modelStorage.pvc.mountPath %q" $src $mount) }}
{{- end }}
{{- else if eq $type "s3" }}
{{- if not (hasPrefix "s3://" $src) }}
{{- fail (printf "modelStorage.type is s3: lorafleet.model.source %q must be an s3:// URI" $src) }}
{{- end }}
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
{{- $served := include "lorafleet.servedBases" . | fromJsonArray }}
{{- $listed := list }}
{{- range .Values.workerGroups }}
{{- $group := .name }}
{{- range (.models | default list) }}
{{- if not (has . $served) }}
{{- fail (printf "workerGroups[%s].models: %q is not a served base (served: %s)" $group . (join ", " $served)) }}
{{- end }}
{{- $listed = append $listed . }}
{{- end }}
{{- if and .models (hasKey (.rayStartParams | default dict) "resources") }}
{{- fail (printf "workerGroups[%s]: rayStartParams.resources and models both set the group's custom Ray resources; list the bases in models and drop rayStartParams.resources (or the other way round)" .name) }}
{{- end }}
{{- end }}
{{- if $listed }}
{{- range $served }}
{{- if not (has . $listed) }}
{{- fail (printf "base %s is listed in no workerGroups[].models: once a group is dedicated to bases, every base must be listed by at least one group, or its replicas have nowhere to run" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- $names := list }}
{{- range .Values.workerGroups }}{{ $names = append $names .name }}{{ end }}
{{- if ne (len $names) (len (uniq $names)) }}
{{- fail (printf "workerGroups: group names must be unique (got %s)" (join ", " $names)) }}
{{- end }}
{{- $as := .Values.autoscaling.engineReplicas }}
{{- if and $as.enabled (($lf.autoscaling).enabled) }}
{{- fail "autoscaling.engineReplicas.enabled and lorafleet.autoscaling.enabled are two autoscalers for one deployment: pick one (lorafleet.autoscaling sizes by the adapters' demand; autoscaling.engineReplicas is Ray Serve's default, on ongoing requests)" }}
{{- end }}
{{- if $as.enabled }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail (printf "autoscaling.engineReplicas: minReplicas (%v) must be <= maxReplicas (%v)" $as.minReplicas $as.maxReplicas) }}
{{- end }}
{{- $perReplica := $lf.deployment.max_ongoing_requests | default $lf.engine.max_num_seqs }}
{{- if gt (float64 $as.targetOngoingRequests) (float64 $perReplica) }}
{{- fail (printf "autoscaling.engineReplicas.targetOngoingRequests (%v) must be <= lorafleet.deployment.max_ongoing_requests (%v; unset: engine.max_num_seqs), or Ray Serve never scales up" $as.targetOngoingRequests $perReplica) }}
{{- end }}
{{- end }}
{{- include "lorafleet.validateCapacity" . }}
{{- include "lorafleet.validateLedger" . }}
{{- include "lorafleet.validateAvailability" . }}
{{- include "lorafleet.validateSecurity" . }}
{{- include "lorafleet.validateMonitoring" . }}
{{- end }}

{{/*
The Ray resource that keeps a base's engine replicas on the worker groups listing it in
`workerGroups[].models`: `lorafleet-base-<slug of served_name>` (the slug of
deployments.config.slug). Such a group offers `lorafleet.baseResourceOffer` of it per pod,
and each replica of the base reserves `lorafleet.baseResourceShare`: a tag, not a quantity.
*/}}
{{- define "lorafleet.baseResource" -}}
{{- printf "lorafleet-base-%s" (regexReplaceAll "[^a-z0-9]+" (lower .) "-" | trimAll "-") }}
{{- end }}

{{- define "lorafleet.baseResourceOffer" -}}1000{{- end }}
{{- define "lorafleet.baseResourceShare" -}}0.001{{- end }}

{{/* Served names of the fleet's bases, as JSON: `models[].served_name`, or `model.served_name`. */}}
{{- define "lorafleet.servedBases" -}}
{{- $lf := .Values.lorafleet }}
{{- $names := list }}
{{- range ($lf.models | default (list $lf.model)) }}{{ $names = append $names .served_name }}{{ end }}
{{- toJson $names }}
{{- end }}

{{/* Whether any worker group is dedicated to bases (`workerGroups[].models`): non-empty or "". */}}
{{- define "lorafleet.groupsByBase" -}}
{{- range .Values.workerGroups }}{{ if .models }}true{{ end }}{{ end }}
{{- end }}

{{/*
Replicas of the engine the worker groups can hold at once. A replica's `replica_gpus` must
sit on one pod (Ray places a replica on one node), so a pod of `gpus` GPUs holds
floor(gpus / replica_gpus) of them. With KubeRay's autoscaler off a group only ever has its
`replicas` pods; with it on, up to `maxReplicas`. Returns the count as a string.
*/}}
{{- define "lorafleet.replicaCapacity" -}}
{{- include "lorafleet.replicaCapacityFor" (dict "root" . "rg" .Values.lorafleet.deployment.replica_gpus "base" (.Values.lorafleet.model | default dict).served_name) }}
{{- end }}

{{- /* `base` (a served name, optional): count only the groups that may run it. */}}
{{- define "lorafleet.replicaCapacityFor" -}}
{{- $rg := float64 .rg }}
{{- $autoscaled := .root.Values.autoscaling.gpuWorkers.enabled }}
{{- $byBase := include "lorafleet.groupsByBase" .root }}
{{- $fit := 0 }}
{{- range .root.Values.workerGroups }}
{{- if or (not $byBase) (not $.base) (has $.base (.models | default list)) }}
{{- $pods := ternary .maxReplicas .replicas $autoscaled }}
{{- $fit = add $fit (mul (int (floor (addf (divf .gpus $rg) 0.000001))) $pods) }}
{{- end }}
{{- end }}
{{- $fit }}
{{- end }}

{{- define "lorafleet.validateCapacity" -}}
{{- $lf := .Values.lorafleet }}
{{- if $lf.models }}
{{- /* Several bases: each base's replicas (its deployment override, else the fleet's) must fit the
worker groups on their own; a replica's GPUs must be on one pod. (Bases share the groups, so this is
a necessary check, not a full bin-packing of every base at once.) */}}
{{- range $lf.models }}
{{- $rg := float64 (dig "deployment" "replica_gpus" $lf.deployment.replica_gpus .) }}
{{- $needed := dig "deployment" "num_replicas" $lf.deployment.num_replicas . }}
{{- if gt $rg 0.0 }}
{{- $fit := int (include "lorafleet.replicaCapacityFor" (dict "root" $ "rg" $rg "base" .served_name)) }}
{{- if gt (int $needed) $fit }}
{{- $which := ternary "the worker groups listing it in workerGroups[].models" "the worker groups" (ne (include "lorafleet.groupsByBase" $) "") }}
{{- fail (printf "base %s: %v engine replicas x %v GPUs need %v GPUs, but %s hold at most %d such replicas (a replica's GPUs must be on one pod): raise workerGroups[].gpus or replicas" .served_name $needed $rg (mulf $needed $rg) $which $fit) }}
{{- end }}
{{- end }}
{{- end }}
{{- else }}
{{- $rg := float64 $lf.deployment.replica_gpus }}
{{- $as := .Values.autoscaling.engineReplicas }}
{{- /* The replicas that must run at once: the fixed count, or Serve's autoscaling minimum. */}}
{{- $needed := ternary $as.minReplicas $lf.deployment.num_replicas $as.enabled }}
{{- if gt $rg 0.0 }}
{{- $fit := int (include "lorafleet.replicaCapacity" .) }}
{{- if gt (int $needed) $fit }}
{{- $autoscaled := .Values.autoscaling.gpuWorkers.enabled }}
{{- $details := list }}
{{- range .Values.workerGroups }}
{{- $pods := ternary .maxReplicas .replicas $autoscaled }}
{{- $details = append $details (printf "%s: %v pods x %v per %v-GPU pod" .name $pods (int (floor (addf (divf .gpus $rg) 0.000001))) .gpus) }}
{{- end }}
{{- $hint := ternary "KubeRay's autoscaler is on, so each group reaches workerGroups[].maxReplicas pods: raise maxReplicas or gpus" "autoscaling.gpuWorkers is off, so each group has exactly workerGroups[].replicas pods: raise replicas, or turn the autoscaler on" $autoscaled }}
{{- $what := ternary "autoscaling.engineReplicas.minReplicas" "lorafleet.deployment.num_replicas" $as.enabled }}
{{- fail (printf "%v engine replicas (%s) x %v GPUs (lorafleet.deployment.replica_gpus) need %v GPUs, but the worker groups hold at most %d such replicas (%s; a replica's GPUs must be on one pod). %s" $needed $what $rg (mulf $needed $rg) $fit (join ", " $details) $hint) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lorafleet.validateLedger" -}}
{{- $lf := .Values.lorafleet }}
{{- $led := .Values.usageLedger }}
{{- $pg := $led.postgres }}
{{- if eq $led.backend "postgres" }}
{{- if and $pg.bundled.enabled $pg.existingSecret }}
{{- fail "usageLedger.postgres: set either existingSecret (your PostgreSQL server's DSN) or bundled.enabled, not both" }}
{{- end }}
{{- if not (or $pg.bundled.enabled $pg.existingSecret) }}
{{- fail "usageLedger.backend is postgres: set usageLedger.postgres.existingSecret to a Secret holding the DSN (key usageLedger.postgres.dsnKey), or usageLedger.postgres.bundled.enabled for an evaluation database" }}
{{- end }}
{{- if $lf.server.usage.ledger_path }}
{{- fail "lorafleet.server.usage.ledger_path is the SQLite file: leave it null with usageLedger.backend postgres" }}
{{- end }}
{{- else }}
{{- if $pg.bundled.enabled }}
{{- fail "usageLedger.postgres.bundled.enabled needs usageLedger.backend: postgres" }}
{{- end }}
{{- if $lf.server.usage.enabled }}
{{- if gt (int $lf.deployment.ingress_replicas) 1 }}
{{- fail (printf "lorafleet.deployment.ingress_replicas is %v with the SQLite usage ledger: several ingress replicas on different nodes would write one SQLite file over a network volume, which corrupts it. Use usageLedger.backend postgres (usageLedger.postgres.existingSecret), one ingress replica, or lorafleet.server.usage.enabled false" $lf.deployment.ingress_replicas) }}
{{- end }}
{{- $path := $lf.server.usage.ledger_path }}
{{- if $path }}
{{- $mounts := list }}
{{- if eq .Values.adapterStorage.type "pvc" }}{{ $mounts = append $mounts (trimSuffix "/" $lf.adapters.uri) }}{{ end }}
{{- range .Values.extraVolumeMounts }}{{ $mounts = append $mounts (trimSuffix "/" .mountPath) }}{{ end }}
{{- $onVolume := false }}
{{- range $mounts }}{{ if hasPrefix (printf "%s/" .) $path }}{{ $onVolume = true }}{{ end }}{{ end }}
{{- if not $onVolume }}
{{- fail (printf "lorafleet.server.usage.ledger_path %q is on no mounted volume (mounted: %s): the ledger would be lost with the pod. Put it under the adapter store's mount or an extraVolumeMounts path, or use usageLedger.backend postgres" $path (join ", " $mounts)) }}
{{- end }}
{{- else if eq .Values.adapterStorage.type "s3" }}
{{- fail "adapterStorage.type is s3 and usage is recorded in SQLite without lorafleet.server.usage.ledger_path: the ledger would sit in a node-local temp folder and vanish with the pod. Use usageLedger.backend postgres, or set ledger_path on a durable extraVolumes volume" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lorafleet.validateAvailability" -}}
{{- $up := .Values.upgradeStrategy }}
{{- if eq $up.type "NewClusterWithIncrementalUpgrade" }}
{{- $o := $up.clusterUpgradeOptions }}
{{- if not $o.gatewayClassName }}
{{- fail "upgradeStrategy.type NewClusterWithIncrementalUpgrade: set upgradeStrategy.clusterUpgradeOptions.gatewayClassName (KubeRay shifts traffic through a Gateway of that class)" }}
{{- end }}
{{- if not .Values.autoscaling.gpuWorkers.enabled }}
{{- fail "upgradeStrategy.type NewClusterWithIncrementalUpgrade needs autoscaling.gpuWorkers.enabled: KubeRay resizes both clusters through Ray's autoscaler" }}
{{- end }}
{{- if gt (int $o.stepSizePercent) (int $o.maxSurgePercent) }}
{{- fail (printf "upgradeStrategy.clusterUpgradeOptions.stepSizePercent (%v) must be <= maxSurgePercent (%v)" $o.stepSizePercent $o.maxSurgePercent) }}
{{- end }}
{{- if .Values.ingress.enabled }}
{{- fail "ingress.enabled with upgradeStrategy NewClusterWithIncrementalUpgrade: during an upgrade the Ingress would keep sending everything to the old cluster while it shrinks. Route clients to the Gateway KubeRay creates (<fullname>-gateway) instead" }}
{{- end }}
{{- end }}
{{- $ft := .Values.gcsFaultTolerance }}
{{- if and $ft.enabled (not $ft.redisAddress) }}
{{- fail "gcsFaultTolerance.enabled: set gcsFaultTolerance.redisAddress (host:port of the external Redis)" }}
{{- end }}
{{- end }}

{{- define "lorafleet.validateSecurity" -}}
{{- $np := .Values.networkPolicy }}
{{- if eq .Values.ray.authMode "disabled" }}
{{- if not $np.enabled }}
{{- fail "ray.authMode is disabled: Ray's dashboard (job submission), GCS and client ports would take unauthenticated calls from anywhere in the cluster. Set networkPolicy.enabled so only this release's pods (and the KubeRay operator, for the dashboard) reach them, or keep ray.authMode token" }}
{{- end }}
{{- if not $np.kuberayOperator.namespace }}
{{- fail "ray.authMode is disabled: set networkPolicy.kuberayOperator.namespace, so only the KubeRay operator's pods in that namespace, not any pod carrying its labels, reach the unauthenticated dashboard" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lorafleet.validateMonitoring" -}}
{{- $rule := .Values.monitoring.prometheusRule }}
{{- if $rule.enabled }}
{{- if not .Values.monitoring.podMonitor.enabled }}
{{- fail "monitoring.prometheusRule.enabled needs monitoring.podMonitor.enabled: the alerts select this release's series by the lorafleet_release label the PodMonitor adds" }}
{{- end }}
{{- if le (float64 $rule.gpuMemoryRatio) (float64 .Values.lorafleet.engine.gpu_memory_utilization) }}
{{- fail (printf "monitoring.prometheusRule.gpuMemoryRatio (%v) must be above lorafleet.engine.gpu_memory_utilization (%v): vLLM reserves that share of GPU memory up front, so the alert would always fire" $rule.gpuMemoryRatio .Values.lorafleet.engine.gpu_memory_utilization) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
serveConfigV2: the Ray Serve config KubeRay applies. applications[0].args is the
`lorafleet:` values block, i.e. the same document `lorafleet serve --config` reads,
validated by deployments.config in build_app; the chart sets only what its own values own
(API keys from `auth`, the ledger's backend from `usageLedger`).
*/}}
{{- define "lorafleet.serveConfig" -}}
{{- $lf := deepCopy .Values.lorafleet }}
{{- /* API auth follows the top-level `auth` values: the keys file is the Secret's key mounted at auth.mountPath. */}}
{{- $auth := dict "enabled" .Values.auth.enabled }}
{{- if .Values.auth.enabled }}
{{- $_ := set $auth "keys_file" (printf "%s/%s" (trimSuffix "/" .Values.auth.mountPath) .Values.auth.keysFileKey) }}
{{- end }}
{{- $_ := set $lf.server "auth" $auth }}
{{- /* The ledger's backend follows `usageLedger`; with PostgreSQL the product reads the DSN from the environment variable named here. */}}
{{- $_ := set $lf.server.usage "backend" .Values.usageLedger.backend }}
{{- $_ := set $lf.server.usage "postgres_dsn_env" .Values.usageLedger.postgres.dsnEnv }}
{{- /* Worker groups dedicated to bases: each base's replicas reserve the resource its groups offer. */}}
{{- if include "lorafleet.groupsByBase" . }}
{{- $share := include "lorafleet.baseResourceShare" . | float64 }}
{{- if $lf.models }}
{{- range $lf.models }}
{{- $d := .deployment | default dict }}
{{- $_ := set $d "ray_resources" (merge (dict (include "lorafleet.baseResource" .served_name) $share) ($d.ray_resources | default dict)) }}
{{- $_ := set . "deployment" $d }}
{{- end }}
{{- else }}
{{- $_ := set $lf.deployment "ray_resources" (merge (dict (include "lorafleet.baseResource" $lf.model.served_name) $share) ($lf.deployment.ray_resources | default dict)) }}
{{- end }}
{{- end }}
{{- $as := .Values.autoscaling.engineReplicas -}}
{{- $drain := .Values.drain -}}
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
    {{- if or $as.enabled $drain.enabled }}
    deployments:
      - name: EngineReplica
        {{- if $drain.enabled }}
        {{- /* A draining or downscaled replica finishes its streams for this long. */}}
        graceful_shutdown_timeout_s: {{ $drain.timeoutSeconds }}
        {{- end }}
        {{- if $as.enabled }}
        num_replicas: auto
        autoscaling_config:
          min_replicas: {{ $as.minReplicas | toJson }}
          max_replicas: {{ $as.maxReplicas | toJson }}
          target_ongoing_requests: {{ $as.targetOngoingRequests | toJson }}
          upscale_delay_s: {{ $as.upscaleDelayS | toJson }}
          downscale_delay_s: {{ $as.downscaleDelayS | toJson }}
        {{- end }}
      {{- if $drain.enabled }}
      - name: Ingress
        graceful_shutdown_timeout_s: {{ $drain.timeoutSeconds }}
      {{- end }}
    {{- end }}
{{- end }}

{{/* Environment of every Ray container (head and workers): the ledger DSN, then extraEnv. */}}
{{- define "lorafleet.commonEnv" -}}
{{- $secret := include "lorafleet.ledgerDsnSecret" . }}
{{- if $secret }}
- name: {{ .Values.usageLedger.postgres.dsnEnv }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "lorafleet.ledgerDsnKey" . }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment of the GPU workers: storage credentials and caches, then the common part. */}}
{{- define "lorafleet.workerEnv" -}}
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
{{- if include "lorafleet.readOnlyRoot" . }}
{{- /* GPU kernel JIT caches default to other home folders: keep them on the writable cache. */}}
- name: TRITON_CACHE_DIR
  value: /home/ray/.cache/triton
- name: CUDA_CACHE_PATH
  value: /home/ray/.cache/nv
{{- end }}
{{- include "lorafleet.commonEnv" . }}
{{- end }}

{{/*
Writable scratch under a read-only root filesystem: Ray's session and logs and torch's
compile cache (/tmp), and the caches vLLM, Triton and FlashInfer keep in the home folder.
*/}}
{{- define "lorafleet.readOnlyRoot" -}}
{{- if .Values.securityContext.readOnlyRootFilesystem }}true{{ end }}
{{- end }}

{{- define "lorafleet.scratchDirs" -}}
tmp: /tmp
home-cache: /home/ray/.cache
home-config: /home/ray/.config
{{- end }}

{{- define "lorafleet.scratchVolumes" -}}
{{- if include "lorafleet.readOnlyRoot" . }}
{{- range $name, $_ := include "lorafleet.scratchDirs" . | fromYaml }}
- name: {{ $name }}
  emptyDir:
    sizeLimit: {{ $.Values.scratchSizeLimit }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lorafleet.scratchMounts" -}}
{{- if include "lorafleet.readOnlyRoot" . }}
{{- range $name, $path := include "lorafleet.scratchDirs" . | fromYaml }}
- name: {{ $name }}
  mountPath: {{ $path }}
{{- end }}
{{- end }}
{{- end }}

{{/* Volumes of the head pod: scratch and extraVolumes only (it runs no replica). */}}
{{- define "lorafleet.headVolumes" -}}
{{- include "lorafleet.scratchVolumes" . }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "lorafleet.headVolumeMounts" -}}
{{- include "lorafleet.scratchMounts" . }}
{{- with .Values.extraVolumeMounts }}
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
{{- include "lorafleet.scratchVolumes" .root }}
{{- if $v.modelStorage.cache.enabled }}
- name: hf-cache
  {{- if $v.modelStorage.cache.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "lorafleet.modelCacheClaimName" .root }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ $v.modelStorage.cache.sizeLimit }}
  {{- end }}
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
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "lorafleet.workerVolumeMounts" -}}
{{- $v := .Values -}}
- name: dshm
  mountPath: /dev/shm
{{- include "lorafleet.scratchMounts" . }}
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
{{- with $v.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
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

{{/*
Topology spread constraints of a pod: a constraint without `labelSelector` spreads the
pods carrying this pod's own labels (`labels`, a dict).
*/}}
{{- define "lorafleet.topologySpread" -}}
{{- $out := list }}
{{- range .constraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $.labels) }}
{{- end }}
{{- $out = append $out $c }}
{{- end }}
{{- with $out }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Pod-level fields shared by head and workers: `pod` is the head or a worker group, `labels`
its selector labels, `automount` whether it gets a service account token.
*/}}
{{- define "lorafleet.podCommon" -}}
{{- $v := .root.Values }}
{{- with include "lorafleet.serviceAccountName" .root }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: {{ .automount }}
{{- with $v.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.imagePullSecrets }}
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
{{- include "lorafleet.topologySpread" (dict "constraints" (default list .pod.topologySpreadConstraints) "labels" .labels) }}
{{- end }}

{{/* Pod hardening of the chart's own small pods (helm test, bundled PostgreSQL). */}}
{{- define "lorafleet.restrictedContainerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}
