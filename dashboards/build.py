"""Build lorafleet's Grafana dashboards (the *.json files next to this script).

    python dashboards/build.py          # rewrite the JSON files
    python dashboards/build.py --check  # exit 1 if a file differs from what this builds

The dashboards are written here, as data, instead of by hand in JSON: every query names
its metric through `deployments.observability.metrics` (so a renamed metric cannot leave a dashboard
querying nothing) or through the few external metrics declared below, and the shared parts
(data source, template variables, panel layout) exist once. After changing them run
`python helm/tools/sync_chart.py`, which copies the JSON files into the Helm chart.
`tests/unit/test_metrics_dashboards.py` checks the files are current;
`tests/helm/test_helm_dashboard_queries.py` evaluates every query with `promtool test
rules` on synthetic series labelled as KubeRay's pods, Ray and the DCGM exporter label
them; `tests/integration/test_metrics.py` runs every query against a real Prometheus
scraping a real fleet.

Template variables: `release` (`lorafleet_release="<namespace>/<release>"`, which the Helm
chart's PodMonitor, and configs/prometheus.yml locally, put on every series: unlike the
RayCluster's name it survives upgrades; "All" also matches series without it), `replica`
(an engine replica's Ray Serve id), `adapter` (the bounded adapter label; see
cluster/labels.py), `tenant` (an API key's tenant) and, on every dashboard, `model` (the
base model: every lorafleet metric with a `model` label follows it). Queries use `$__rate_interval` and,
for totals over the dashboard's time range, `$__range`.

Sources besides lorafleet's own metrics:
- Ray Serve's (`ray_serve_*`): replica health, autoscaling targets, deployment states,
  handle queues;
- vLLM's (`ray_vllm_*`, exported through Ray by the engine replica, `ReplicaId` = replica):
  its preemption counter and queue-time histogram. Its gauges vanish while an engine is
  idle (Ray drops a gauge not set for two export intervals); running, waiting and KV cache
  come from lorafleet's replica gauges, republished every stats period;
- NVIDIA's DCGM exporter (`DCGM_FI_*`): the GPU metrics GPU clusters already collect. Its
  series name the pod using a GPU in `pod`/`namespace` when it is scraped with
  honorLabels, in `exported_pod`/`exported_namespace` when not; `dcgm()` folds both into
  `pod`/`namespace` and keeps the GPUs of pods that run the selected engine replicas (the
  join by pod).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from deployments.observability import metrics as m  # noqa: E402

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "[$__rate_interval]"
RANGE = "[$__range]"
RELEASE = 'lorafleet_release=~"$release"'
REPLICA = 'replica=~"$replica"'
VLLM_REPLICA = 'ReplicaId=~"$replica"'
ADAPTER = 'adapter=~"$adapter"'
MODEL = 'model=~"$model"'
TENANT = 'tenant=~"$tenant"'
APP = 'application="lorafleet"'
GPU_TIER = 'tier="gpu"'
HIT_TIERS = 'tier=~"gpu|cpu"'
ADAPTER_TIERS = 'tier!~"base|none"'  # decisions for adapter requests that found a replica
NAMED_ADAPTERS = 'adapter!~"_.*"'  # not _other, _base, _unknown
ERRORS = 'status!~"2.."'


@dataclass(frozen=True)
class External:
    """A metric another component exports, named as scraped."""

    exported_name: str
    source: str


# Ray Serve (ray 2.60), from every node's Ray metrics endpoint.
SERVE_REPLICA_HEALTHY = External("ray_serve_deployment_replica_healthy", "ray-serve")
SERVE_TARGET_REPLICAS = External("ray_serve_autoscaling_target_replicas", "ray-serve")
SERVE_DEPLOYMENT_STATUS = External("ray_serve_deployment_status", "ray-serve")
SERVE_QUEUED = External("ray_serve_deployment_queued_queries", "ray-serve")
SERVE_PROCESSING = External("ray_serve_replica_processing_queries", "ray-serve")
SERVE_STARTUP = External("ray_serve_replica_startup_latency_ms", "ray-serve")  # histogram
SERVE_HEALTH_CHECK_FAILURES = External("ray_serve_health_check_failures_total", "ray-serve")
# vLLM, through Ray (deployments/vllm_engine.py registers RayPrometheusStatLogger).
VLLM_PREEMPTIONS = External("ray_vllm_num_preemptions_total", "vllm")
VLLM_QUEUE_TIME = External("ray_vllm_request_queue_time_seconds", "vllm")
# NVIDIA DCGM exporter (framebuffer in MiB, power in W, temperature in degrees C,
# XID_ERRORS = the code of the GPU's last XID error, 0 = none).
DCGM_UTIL = External("DCGM_FI_DEV_GPU_UTIL", "dcgm")
DCGM_FB_USED = External("DCGM_FI_DEV_FB_USED", "dcgm")
DCGM_FB_FREE = External("DCGM_FI_DEV_FB_FREE", "dcgm")
DCGM_POWER = External("DCGM_FI_DEV_POWER_USAGE", "dcgm")
DCGM_TEMP = External("DCGM_FI_DEV_GPU_TEMP", "dcgm")
DCGM_XID = External("DCGM_FI_DEV_XID_ERRORS", "dcgm")
EXTERNAL_METRICS = tuple(v for v in dict(globals()).values() if isinstance(v, External))

def sel(spec: m.MetricSpec | External, *matchers: str, suffix: str = "") -> str:
    """`<metric><suffix>{matchers}`: the scraped series of one metric. A lorafleet metric
    with a `model` (base) label follows the dashboard's `model` variable."""
    if isinstance(spec, m.MetricSpec) and "model" in spec.labels and not any(x.startswith("model") for x in matchers):
        matchers = (*matchers, MODEL)
    return f"{spec.exported_name}{suffix}{{{', '.join(matchers)}}}"


def rate(spec: m.MetricSpec | External, *matchers: str, by: str = "", suffix: str = "") -> str:
    aggregation = f"sum by ({by}) " if by else "sum"
    return f"{aggregation}(rate({sel(spec, *matchers, suffix=suffix)}{RATE}))"


def increase(spec: m.MetricSpec | External, *matchers: str, by: str) -> str:
    """Total over the dashboard's time range."""
    return f"sum by ({by}) (increase({sel(spec, *matchers)}{RANGE}))"


def quantile(q: float, spec: m.MetricSpec | External, *matchers: str, by: str = "") -> str:
    return f"histogram_quantile({q}, {rate(spec, *matchers, by=', '.join(filter(None, ['le', by])), suffix='_bucket')})"


def zero_per_replica_id() -> str:
    """0 for every live engine replica, labelled `ReplicaId` as vLLM's series are: the
    fallback of vLLM's counters, from lorafleet's replica gauge (always exported while the
    replica lives; vLLM's own gauges vanish while the engine is idle)."""
    zero = f"0 * {sel(m.RUNNING_REQUESTS, RELEASE, REPLICA)}"
    return f'sum by (ReplicaId) (label_replace({zero}, "ReplicaId", "$1", "replica", "(.*)"))'


def zero_per(spec: m.MetricSpec | External, *matchers: str, by: str) -> str:
    """0 for every (by) combination present in `spec`: the fallback of a counter that has
    never moved (Ray exports no series for it, and refuses `inc(0)`), so a panel shows 0
    instead of "No data"."""
    return f"sum by ({by}) (0 * {sel(spec, *matchers)})"


# Pods running the selected engine replicas of the selected release: the join key between
# lorafleet's replicas and the DCGM exporter's GPUs.
REPLICA_PODS = f"group by (namespace, pod) ({sel(m.RUNNING_REQUESTS, RELEASE, REPLICA)})"


def dcgm(spec: External) -> str:
    """A DCGM series with its GPU user in `pod`/`namespace` (however it was scraped), for the
    GPUs of pods that run the selected engine replicas."""
    folded = (f'label_replace(label_replace({spec.exported_name}, "pod", "$1", "exported_pod", "(.+)"), '
              f'"namespace", "$1", "exported_namespace", "(.+)")')
    return f"({folded} and on (namespace, pod) {REPLICA_PODS})"


@dataclass
class Target:
    expr: str
    legend: str = ""


@dataclass
class Panel:
    title: str
    description: str
    targets: list[Target]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    stack: bool = False
    extra: dict = field(default_factory=dict)


def _variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "refresh": 2,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }


def variables(*names: str) -> list[dict]:
    out = [{
        "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
        "current": {}, "hide": 0, "refresh": 1, "options": [],
    }]
    queries = {
        "release": ("Release", f"label_values({m.REQUESTS.exported_name}, lorafleet_release)"),
        "model": ("Base model", f"label_values({m.REQUESTS.exported_name}{{{RELEASE}}}, model)"),
        "replica": ("Replica", f"label_values({sel(m.RUNNING_REQUESTS, RELEASE)}, replica)"),
        "adapter": ("Adapter", f"label_values({sel(m.REQUESTS, RELEASE)}, adapter)"),
        "tenant": ("Tenant", f"label_values({sel(m.USAGE_REQUESTS, RELEASE)}, tenant)"),
    }
    for name in names:
        label, query = queries[name]
        out.append(_variable(name, label, query))
    return out


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    defaults: dict = {"unit": panel.unit}
    if panel.kind == "timeseries":
        defaults["custom"] = {"fillOpacity": 20 if panel.stack else 5, "lineWidth": 1, "showPoints": "never",
                              "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"}}
    out = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": t.expr, "legendFormat": t.legend or "__auto",
             "range": panel.kind != "table", "instant": panel.kind == "table"}
            for i, t in enumerate(panel.targets)
        ],
    }
    if panel.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    if panel.kind == "table":
        out["options"] = {"showHeader": True, "sortBy": [{"displayName": "Value", "desc": True}]}
        out["transformations"] = [{"id": "labelsToFields", "options": {}},
                                  {"id": "organize", "options": {"excludeByName": {"Time": True}}}]
    out.update(panel.extra)
    return out


def _with_model(var_names: tuple[str, ...]) -> tuple[str, ...]:
    if "model" in var_names:
        return var_names
    at = var_names.index("release") + 1 if "release" in var_names else 0
    return (*var_names[:at], "model", *var_names[at:])


def dashboard(uid: str, title: str, description: str, var_names: tuple[str, ...], panels: list[Panel]) -> dict:
    laid_out, x, y, row_height = [], 0, 0, 0
    for i, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        laid_out.append(_panel_json(panel, i, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["lorafleet"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["lorafleet"], "asDropdown": True, "title": "lorafleet dashboards",
                   "includeVars": True, "keepTime": True}],
        # Every dashboard filters by base model too (right after the release).
        "templating": {"list": variables(*_with_model(var_names))},
        "panels": laid_out,
    }


# ---- the dashboards --------------------------------------------------------------------


def overview() -> dict:
    req = (RELEASE, ADAPTER)
    errors = sel(m.REQUESTS, RELEASE, ADAPTER, ERRORS)
    return dashboard("lorafleet-overview", "lorafleet / Fleet overview",
                     "Traffic, throughput, errors and latency of the whole fleet, as clients see it.",
                     ("release", "replica", "adapter"), [
        Panel("Requests per second", "API requests (completions, chat) by endpoint and HTTP status.",
              [Target(rate(m.REQUESTS, *req, by="endpoint, status"), "{{endpoint}} {{status}}")], "reqps", stack=True),
        Panel("Tokens per second", "Generated (output) and prompt tokens of completed requests.",
              [Target(rate(m.GENERATION_TOKENS, *req, REPLICA), "output"),
               Target(rate(m.PROMPT_TOKENS, *req, REPLICA), "prompt")], "short"),
        Panel("Error ratio", "Share of requests answered with a non-2xx status (4xx: the client's, 5xx: the fleet's).",
              [Target(f"(sum(rate({errors}{RATE})) or vector(0)) / {rate(m.REQUESTS, *req)}", "errors")], "percentunit"),
        Panel("Errors per second by status", "Non-2xx answers by status (499: the client went away).",
              [Target(f"sum by (status) (rate({errors}{RATE}))", "{{status}}")], "reqps", stack=True),
        Panel("Time to first token", "From arrival at the ingress to the first streamed chunk (streams only).",
              [Target(quantile(0.5, m.TIME_TO_FIRST_TOKEN, *req), "p50"),
               Target(quantile(0.99, m.TIME_TO_FIRST_TOKEN, *req), "p99")], "s"),
        Panel("Time per output token", "vLLM's decode time per token after the first, per finished request.",
              [Target(quantile(0.5, m.TIME_PER_OUTPUT_TOKEN, RELEASE, REPLICA), "p50"),
               Target(quantile(0.99, m.TIME_PER_OUTPUT_TOKEN, RELEASE, REPLICA), "p99")], "s"),
        Panel("End-to-end latency", "Successful requests, from arrival at the ingress to the last byte.",
              [Target(quantile(0.5, m.REQUEST_DURATION, *req), "p50"),
               Target(quantile(0.99, m.REQUEST_DURATION, *req), "p99")], "s"),
        Panel("Running and queued requests", "Requests inside the engines: running in a batch, or waiting for one.",
              [Target(f"sum({sel(m.RUNNING_REQUESTS, RELEASE, REPLICA)})", "running"),
               Target(f"sum({sel(m.QUEUED_REQUESTS, RELEASE, REPLICA)})", "queued")], "short"),
        Panel("Live engine replicas", "Replicas that reported to the fleet controller recently.",
              [Target(f"max({sel(m.LIVE_REPLICAS, RELEASE)})", "replicas")], "short", kind="stat", width=6),
        Panel("Output tokens per second (now)", "Fleet-wide generated tokens per second.",
              [Target(rate(m.GENERATION_TOKENS, RELEASE), "tok/s")], "short", kind="stat", width=6),
        Panel("KV cache use per replica", "Fraction of each engine's KV cache in use.",
              [Target(f"max by (replica) ({sel(m.KV_CACHE_USAGE, RELEASE, REPLICA)})", "{{replica}}")],
              "percentunit"),
    ])


def gpu() -> dict:
    util = sel(m.GPU_UTILIZATION, RELEASE, REPLICA)
    used = sel(m.GPU_MEMORY_USED, RELEASE, REPLICA)
    total = sel(m.GPU_MEMORY_TOTAL, RELEASE, REPLICA)
    fb_used, fb_free = dcgm(DCGM_FB_USED), dcgm(DCGM_FB_FREE)
    return dashboard("lorafleet-gpu", "lorafleet / GPUs",
                     "The GPUs of the pods running the selected engine replicas: NVIDIA's DCGM exporter (what a GPU "
                     "cluster already collects: utilisation, framebuffer, power, temperature, XID errors), joined to "
                     "lorafleet's replicas by pod, and lorafleet's own NVML readings per replica. DCGM panels are empty "
                     "without the DCGM exporter, NVML ones where no engine runs on a GPU: neither reports zeros for a "
                     "GPU that does not exist.",
                     ("release", "replica"), [
        Panel("GPU utilisation (DCGM)", "DCGM_FI_DEV_GPU_UTIL of each GPU of the pods running the selected replicas.",
              [Target(f"avg by (pod, gpu) ({dcgm(DCGM_UTIL)}) / 100", "{{pod}} gpu {{gpu}}")], "percentunit"),
        Panel("GPU memory use (DCGM)", "Framebuffer used / (used + free) of each GPU; vLLM reserves "
              "engine.gpu_memory_utilization of it up front.",
              [Target(f"sum by (pod, gpu) ({fb_used}) / (sum by (pod, gpu) ({fb_used}) + sum by (pod, gpu) ({fb_free}))",
                      "{{pod}} gpu {{gpu}}")], "percentunit"),
        Panel("GPU memory used (DCGM)", "Framebuffer in use on each GPU (DCGM reports MiB).",
              [Target(f"sum by (pod, gpu) ({fb_used}) * 1048576", "{{pod}} gpu {{gpu}}")], "bytes"),
        Panel("GPU power (DCGM)", "Power draw of each GPU.",
              [Target(f"sum by (pod, gpu) ({dcgm(DCGM_POWER)})", "{{pod}} gpu {{gpu}}")], "watt"),
        Panel("GPU temperature (DCGM)", "Temperature of each GPU.",
              [Target(f"max by (pod, gpu) ({dcgm(DCGM_TEMP)})", "{{pod}} gpu {{gpu}}")], "celsius"),
        Panel("XID errors (DCGM)", "The code of each GPU's last XID error (0 = none; 48 double-bit ECC, 79 fallen off "
              "the bus, ... see NVIDIA's XID catalogue).",
              [Target(f"max by (pod, gpu) ({dcgm(DCGM_XID)})", "{{pod}} gpu {{gpu}}")], "none"),
        Panel("Engine replicas per pod", "Which engine replica runs in which pod: the join between the DCGM panels "
              "(by pod) and lorafleet's (by replica).",
              [Target(f"max by (pod, replica) ({sel(m.RUNNING_REQUESTS, RELEASE, REPLICA)})", "{{pod}} {{replica}}")],
              "short", kind="table"),
        Panel("GPU utilisation per replica (NVML)", "lorafleet's NVML utilisation of each GPU of each engine replica.",
              [Target(f"avg by (replica, gpu) ({util})", "{{replica}} gpu {{gpu}}")], "percentunit"),
        Panel("GPU memory use per replica (NVML)", "Used / total memory of each GPU of each replica.",
              [Target(f"sum by (replica, gpu) ({used}) / sum by (replica, gpu) ({total})", "{{replica}} gpu {{gpu}}")],
              "percentunit"),
        Panel("GPU memory used per node (NVML)", "Memory in use over the GPUs of each Ray node, and their size.",
              [Target(f"sum by (NodeAddress) ({used})", "{{NodeAddress}} used"),
               Target(f"sum by (NodeAddress) ({total})", "{{NodeAddress}} total")], "bytes"),
        Panel("Fleet GPU utilisation (NVML)", "Average utilisation over every GPU of the fleet.",
              [Target(f"avg({util})", "utilisation")], "percentunit", kind="stat", width=6),
        Panel("GPUs reporting (NVML)", "GPUs with NVML readings.",
              [Target(f"count({util})", "GPUs")], "short", kind="stat", width=6),
        Panel("KV cache use per replica", "Fraction of each engine's KV cache in use (GPU memory vLLM reserved).",
              [Target(f"max by (replica) ({sel(m.KV_CACHE_USAGE, RELEASE, REPLICA)})", "{{replica}}")],
              "percentunit"),
    ])


def adapters() -> dict:
    zero_by_tier = zero_per(m.ADAPTER_SLOTS, RELEASE, REPLICA, by="tier")
    zero_by_replica_tier = zero_per(m.ADAPTER_SLOTS, RELEASE, REPLICA, by="replica, tier")
    decisions = sel(m.ROUTER_DECISIONS, RELEASE)
    adapter_decisions = f"sum(rate({sel(m.ROUTER_DECISIONS, RELEASE, ADAPTER_TIERS)}{RATE}))"
    requests_named = (RELEASE, ADAPTER, NAMED_ADAPTERS)
    return dashboard("lorafleet-adapters", "lorafleet / Adapters",
                     "Where adapters live (GPU slots, host memory), how often requests find them there, the "
                     "loads and evictions that moves cost, and which adapters carry the traffic.",
                     ("release", "replica", "adapter"), [
        Panel("Resident adapters per replica and tier",
              "gpu: in a LoRA slot; cpu: in host memory only; loading: being read from the store.",
              [Target(f"sum by (replica, tier) ({sel(m.RESIDENT_ADAPTERS, RELEASE, REPLICA)})", "{{replica}} {{tier}}")],
              "short", stack=True),
        Panel("GPU slot occupancy", "Adapters in LoRA slots / slots (max_loras), per replica.",
              [Target(f"sum by (replica) ({sel(m.RESIDENT_ADAPTERS, RELEASE, REPLICA, GPU_TIER)}) / "
                      f"sum by (replica) ({sel(m.ADAPTER_SLOTS, RELEASE, REPLICA, GPU_TIER)})", "{{replica}}")],
              "percentunit"),
        Panel("Residency hit ratio (router)",
              "Of the adapter requests routed, the share sent to a replica holding the adapter in a GPU slot, "
              "or in a GPU slot or host memory (what the router knew at decision time).",
              [Target(f"{rate(m.ROUTER_DECISIONS, RELEASE, GPU_TIER)} / {adapter_decisions}", "GPU slot"),
               Target(f"{rate(m.ROUTER_DECISIONS, RELEASE, HIT_TIERS)} / {adapter_decisions}",
                      "GPU slot or host memory")], "percentunit"),
        Panel("Routing decisions by residency", "Decisions per second by where the chosen replica held the adapter.",
              [Target(f"sum by (tier) (rate({decisions}{RATE}))", "{{tier}}")], "ops", stack=True),
        Panel("Adapter loads per minute", "gpu: into a LoRA slot from host memory; cpu: read from the store.",
              [Target(f"{rate(m.ADAPTER_LOADS, RELEASE, REPLICA, by='tier')} * 60 or {zero_by_tier}", "{{tier}}")],
              "short"),
        Panel("Adapter evictions per minute", "gpu: lost a LoRA slot; cpu: dropped from host memory.",
              [Target(f"{rate(m.ADAPTER_EVICTIONS, RELEASE, REPLICA, by='tier')} * 60 or {zero_by_tier}", "{{tier}}")],
              "short"),
        Panel("Adapter load time", "Reading an adapter from the store into an engine (vLLM add_lora).",
              [Target(quantile(0.5, m.ADAPTER_LOAD_DURATION, RELEASE, REPLICA), "p50"),
               Target(quantile(0.99, m.ADAPTER_LOAD_DURATION, RELEASE, REPLICA), "p99")], "s"),
        Panel("Loads and evictions per replica (per minute)", "Per replica and tier, to spot a thrashing replica.",
              [Target(f"{rate(m.ADAPTER_LOADS, RELEASE, REPLICA, by='replica, tier')} * 60 or {zero_by_replica_tier}",
                      "{{replica}} load {{tier}}"),
               Target(f"{rate(m.ADAPTER_EVICTIONS, RELEASE, REPLICA, by='replica, tier')} * 60 or {zero_by_replica_tier}",
                      "{{replica}} evict {{tier}}")], "short"),
        Panel("Top adapters by requests", "The 10 named adapters with the most requests per second "
              "(`_other` = adapters beyond observability.adapter_label_top_k).",
              [Target(f"topk(10, {rate(m.REQUESTS, *requests_named, by='adapter')})", "{{adapter}}")], "reqps",
              kind="table"),
        Panel("Top adapters by output tokens", "The 10 named adapters generating the most tokens per second.",
              [Target(f"topk(10, {rate(m.GENERATION_TOKENS, *requests_named, by='adapter')})", "{{adapter}}")],
              "short", kind="table"),
        Panel("Requests per second by adapter", "Every adapter label value, `_base` and `_other` included.",
              [Target(rate(m.REQUESTS, RELEASE, ADAPTER, by="adapter"), "{{adapter}}")], "reqps", stack=True),
        Panel("Time to first token by adapter (p99)", "Streams only; slow first tokens often mean adapter loads.",
              [Target(quantile(0.99, m.TIME_TO_FIRST_TOKEN, RELEASE, ADAPTER, by="adapter"), "{{adapter}}")], "s"),
    ])


def routing() -> dict:
    return dashboard("lorafleet-routing", "lorafleet / Routing and placement",
                     "The adapter-aware router's decisions and cost, how load spreads over replicas, and the "
                     "placement controller's passes and drift.",
                     ("release", "replica"), [
        Panel("Routing decisions by residency", "gpu, cpu: hits; loading, free_slot, needs_eviction, unknown: "
              "misses; base: no adapter; none: no replica could take the request.",
              [Target(rate(m.ROUTER_DECISIONS, RELEASE, by="policy, tier"), "{{policy}} {{tier}}")], "ops", stack=True),
        Panel("Routing decision time", "One decision in the router (view refresh + policy).",
              [Target(quantile(0.5, m.ROUTER_DECISION_DURATION, RELEASE), "p50"),
               Target(quantile(0.99, m.ROUTER_DECISION_DURATION, RELEASE), "p99")], "s"),
        Panel("Output tokens per second per replica", "How the generated tokens spread over the replicas.",
              [Target(rate(m.GENERATION_TOKENS, RELEASE, REPLICA, by="replica"), "{{replica}}")], "short", stack=True),
        Panel("Running requests per replica", "Requests each engine is running.",
              [Target(f"sum by (replica) ({sel(m.RUNNING_REQUESTS, RELEASE, REPLICA)})", "{{replica}}")], "short"),
        Panel("Queued requests per replica", "Requests waiting in each engine's queue.",
              [Target(f"sum by (replica) ({sel(m.QUEUED_REQUESTS, RELEASE, REPLICA)})", "{{replica}}")], "short"),
        Panel("Live engine replicas", "Replicas reporting to the fleet controller.",
              [Target(f"max({sel(m.LIVE_REPLICAS, RELEASE)})", "replicas")], "short"),
        Panel("Placement planning time", "Wall time of the placement controller's planning passes.",
              [Target(quantile(0.5, m.PLANNING_DURATION, RELEASE), "p50"),
               Target(quantile(0.99, m.PLANNING_DURATION, RELEASE), "p99")], "s"),
        Panel("Placement actions per second", "Loads and unloads carried out for the placement, per tier.",
              [Target(rate(m.PLACEMENT_ACTIONS, RELEASE, by="action, tier"), "{{action}} {{tier}}")], "ops", stack=True),
        Panel("Placement drift", "Actions still between the desired and the observed placement after the last pass.",
              [Target(f"max by (action, tier) ({sel(m.PLACEMENT_DRIFT, RELEASE)})", "{{action}} {{tier}}")], "short",
              stack=True),
    ])


def usage() -> dict:
    completed = (RELEASE, TENANT, ADAPTER)
    # Ray exports a counter only once it moved: tenants with usage and no 429 count 0.
    no_429s = zero_per(m.USAGE_REQUESTS, RELEASE, TENANT, by="tenant")
    limited = f"({rate(m.RATE_LIMITED, RELEASE, TENANT, by='tenant')} or {no_429s})"
    return dashboard("lorafleet-usage", "lorafleet / Usage and limits",
                     "What each tenant used, as the usage ledger records it (requests and the engine's token counts), "
                     "and the requests per-key limits refused with 429.",
                     ("release", "tenant", "adapter"), [
        Panel("Requests per second by tenant", "Completed requests recorded in the usage ledger.",
              [Target(rate(m.USAGE_REQUESTS, *completed, by="tenant"), "{{tenant}}")], "reqps", stack=True),
        Panel("Tokens per second by tenant", "Prompt and generated tokens recorded in the usage ledger.",
              [Target(rate(m.USAGE_PROMPT_TOKENS, *completed, by="tenant"), "{{tenant}} prompt"),
               Target(rate(m.USAGE_COMPLETION_TOKENS, *completed, by="tenant"), "{{tenant}} completion")], "short"),
        Panel("Rate-limited requests per second", "429s of per-key limits, by tenant and limit (requests, tokens); 0 "
              "for tenants with usage and no 429 yet.",
              [Target(f"{rate(m.RATE_LIMITED, RELEASE, TENANT, by='tenant, limit')} or on (tenant) {no_429s}",
                      "{{tenant}} {{limit}}")],
              "reqps", stack=True),
        Panel("Share of requests rate-limited by tenant", "429s / (429s + completed requests) per tenant.",
              [Target(f"{limited} / ({limited} + {rate(m.USAGE_REQUESTS, RELEASE, TENANT, by='tenant')})", "{{tenant}}")],
              "percentunit"),
        Panel("Usage over the time range by tenant and adapter", "Requests and tokens per tenant and adapter over "
              "the dashboard's time range (what `GET /v1/usage` bills).",
              [Target(increase(m.USAGE_REQUESTS, *completed, by="tenant, adapter"), "requests"),
               Target(increase(m.USAGE_PROMPT_TOKENS, *completed, by="tenant, adapter"), "prompt tokens"),
               Target(increase(m.USAGE_COMPLETION_TOKENS, *completed, by="tenant, adapter"), "completion tokens")],
              "short", kind="table", width=24),
        Panel("Top tenants by generated tokens", "The 10 tenants generating the most tokens per second.",
              [Target(f"topk(10, {rate(m.USAGE_COMPLETION_TOKENS, *completed, by='tenant')})", "{{tenant}}")], "short",
              kind="table"),
        Panel("Top adapters by requests (all tenants)", "The 10 adapter labels with the most completed requests per second.",
              [Target(f"topk(10, {rate(m.USAGE_REQUESTS, *completed, by='adapter')})", "{{adapter}}")], "reqps",
              kind="table"),
    ])


SERVE_STATES = {"0": "UNKNOWN", "1": "DEPLOY_FAILED", "2": "UNHEALTHY", "3": "UPDATING", "4": "UPSCALING",
                "5": "DOWNSCALING", "6": "HEALTHY"}


def serve() -> dict:
    deployments = (RELEASE, APP)
    state_mapping = {"fieldConfig": {"defaults": {"unit": "none", "mappings": [
        {"type": "value", "options": {k: {"text": v, "index": int(k)} for k, v in SERVE_STATES.items()}}]},
        "overrides": []}}
    return dashboard("lorafleet-serve", "lorafleet / Ray Serve and vLLM",
                     "Ray Serve's view of lorafleet's deployments (replica health, autoscaling targets, states, "
                     "queues at the handles) and vLLM's view inside each engine (running and waiting requests, "
                     "preemptions, KV cache, queue time).",
                     ("release", "replica"), [
        Panel("Healthy replicas by deployment", "Replicas Ray Serve's controller sees healthy (EngineReplica, Ingress, "
              "FleetController).",
              [Target(f"sum by (deployment) ({sel(SERVE_REPLICA_HEALTHY, *deployments)})", "{{deployment}}")], "short"),
        Panel("Target replicas by deployment", "The replica count Ray Serve is steering each deployment to "
              "(the autoscaler's decision, or the configured count).",
              [Target(f"max by (deployment) ({sel(SERVE_TARGET_REPLICAS, *deployments)})", "{{deployment}}")], "short"),
        Panel("Deployment state", "Ray Serve's state of each deployment.",
              [Target(f"max by (deployment) ({sel(SERVE_DEPLOYMENT_STATUS, *deployments)})", "{{deployment}}")],
              "none", kind="stat", extra=state_mapping),
        Panel("Requests queued at handles", "Requests waiting in Ray Serve's handles for a replica of each deployment "
              "(beyond max_ongoing_requests).",
              [Target(f"sum by (deployment) ({sel(SERVE_QUEUED, *deployments)})", "{{deployment}}")], "short"),
        Panel("Requests in replicas", "Requests each deployment's replicas are processing (Ray Serve's count).",
              [Target(f"sum by (deployment) ({sel(SERVE_PROCESSING, *deployments)})", "{{deployment}}")], "short"),
        Panel("Replica start time", "From a replica's creation to ready, over every start since Ray Serve's "
              "controller started (starts are rare and most happen before the first scrape, where increase() "
              "over a range would miss them): for the engine, mostly loading the model (and waiting for a GPU pod).",
              [Target(f"histogram_quantile(0.5, sum by (le, deployment) ({sel(SERVE_STARTUP, *deployments, suffix='_bucket')})) / 1000",
                      "{{deployment}} p50"),
               Target(f"histogram_quantile(0.99, sum by (le, deployment) ({sel(SERVE_STARTUP, *deployments, suffix='_bucket')})) / 1000",
                      "{{deployment}} p99")], "s"),
        Panel("Failed health checks per minute", "Health checks of each deployment's replicas that failed "
              "(an engine that died fails them; Ray Serve then replaces the replica).",
              [Target(f"{rate(SERVE_HEALTH_CHECK_FAILURES, *deployments, by='deployment')} * 60 or "
                      f"{zero_per(SERVE_REPLICA_HEALTHY, *deployments, by='deployment')}", "{{deployment}}")], "short"),
        # Running, waiting and KV cache come from lorafleet's replica gauges (vLLM's scheduler
        # counts, republished every stats period): Ray drops a gauge not set within two export
        # intervals, and vLLM sets its own only on engine steps, so an idle engine's
        # `ray_vllm_*` gauges vanish and the panel would read "No data" instead of 0.
        Panel("vLLM running and waiting requests per replica", "Sequences in each engine's running batch, and "
              "waiting for one (vLLM's scheduler, as each engine replica reports it every stats period).",
              [Target(f"sum by (replica) ({sel(m.RUNNING_REQUESTS, RELEASE, REPLICA)})", "{{replica}} running"),
               Target(f"sum by (replica) ({sel(m.QUEUED_REQUESTS, RELEASE, REPLICA)})", "{{replica}} waiting")],
              "short"),
        Panel("vLLM preemptions per minute", "Requests vLLM preempted (KV cache exhausted: recomputed later). "
              "Sustained preemptions mean too little KV cache for the batch.",
              [Target(f"{rate(VLLM_PREEMPTIONS, RELEASE, VLLM_REPLICA, by='ReplicaId')} * 60 or "
                      f"{zero_per_replica_id()}", "{{ReplicaId}}")], "short"),
        Panel("vLLM KV cache use", "Fraction of each engine's KV cache blocks in use (as each engine replica "
              "reports it every stats period).",
              [Target(f"max by (replica) ({sel(m.KV_CACHE_USAGE, RELEASE, REPLICA)})", "{{replica}}")],
              "percentunit"),
        Panel("vLLM queue time", "Time requests wait in vLLM's queue before their first scheduling.",
              [Target(quantile(0.5, VLLM_QUEUE_TIME, RELEASE, VLLM_REPLICA), "p50"),
               Target(quantile(0.99, VLLM_QUEUE_TIME, RELEASE, VLLM_REPLICA), "p99")], "s"),
    ])


DASHBOARDS = {
    "lorafleet-overview.json": overview,
    "lorafleet-gpu.json": gpu,
    "lorafleet-adapters.json": adapters,
    "lorafleet-routing.json": routing,
    "lorafleet-usage.json": usage,
    "lorafleet-serve.json": serve,
}


def render(build) -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report files that differ instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path, text = HERE / name, render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    for name in stale:
        print(f"out of date: dashboards/{name} (run python dashboards/build.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
