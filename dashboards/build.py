"""Build lorafleet's Grafana dashboards (the *.json files next to this script).

    python dashboards/build.py          # rewrite the JSON files
    python dashboards/build.py --check  # exit 1 if a file differs from what this builds

The dashboards are written here, as data, instead of by hand in JSON: every query names
its metric through `deployments.observability.metrics` (so a renamed metric cannot leave a dashboard
querying nothing), and the shared parts (data source, template variables, panel layout)
exist once. After changing them run `python helm/tools/sync_chart.py`, which copies the
JSON files into the Helm chart. `tests/unit/test_metrics_dashboards.py` checks the files
are current; `tests/integration/test_metrics.py` runs every query against a real
Prometheus scraping a real fleet.

Template variables: `cluster` (the `ray_io_cluster` label KubeRay's PodMonitor of the chart,
and configs/prometheus.yml locally, put on every series; "All" also matches series
without it), `replica` (an engine replica's Ray Serve id) and `adapter` (the bounded
adapter label; see cluster/labels.py). Queries use `$__rate_interval`.
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
CLUSTER = 'ray_io_cluster=~"$cluster"'
REPLICA = 'replica=~"$replica"'
ADAPTER = 'adapter=~"$adapter"'
GPU_TIER = 'tier="gpu"'
HIT_TIERS = 'tier=~"gpu|cpu"'
ADAPTER_TIERS = 'tier!~"base|none"'  # decisions for adapter requests that found a replica
NAMED_ADAPTERS = 'adapter!~"_.*"'  # not _other, _base, _unknown
ERRORS = 'status!~"2.."'


def sel(spec: m.MetricSpec, *matchers: str, suffix: str = "") -> str:
    """`ray_<metric><suffix>{matchers}`: the scraped series of one metric."""
    return f"{spec.exported_name}{suffix}{{{', '.join(matchers)}}}"


def rate(spec: m.MetricSpec, *matchers: str, by: str = "", suffix: str = "") -> str:
    aggregation = f"sum by ({by}) " if by else "sum"
    return f"{aggregation}(rate({sel(spec, *matchers, suffix=suffix)}{RATE}))"


def quantile(q: float, spec: m.MetricSpec, *matchers: str, by: str = "") -> str:
    return f"histogram_quantile({q}, {rate(spec, *matchers, by=', '.join(filter(None, ['le', by])), suffix='_bucket')})"


def zero_per(spec: m.MetricSpec, *matchers: str, by: str) -> str:
    """0 for every (by) combination present in `spec`: the fallback of a counter that has
    never moved (Ray exports no series for it, and refuses `inc(0)`), so a panel shows 0
    instead of "No data"."""
    return f"sum by ({by}) (0 * {sel(spec, *matchers)})"


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
        "cluster": ("Cluster", f"label_values({m.REQUESTS.exported_name}, ray_io_cluster)"),
        "replica": ("Replica", f"label_values({sel(m.RUNNING_REQUESTS, CLUSTER)}, replica)"),
        "adapter": ("Adapter", f"label_values({sel(m.REQUESTS, CLUSTER)}, adapter)"),
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
        "templating": {"list": variables(*var_names)},
        "panels": laid_out,
    }


# ---- the dashboards --------------------------------------------------------------------


def overview() -> dict:
    req = (CLUSTER, ADAPTER)
    errors = sel(m.REQUESTS, CLUSTER, ADAPTER, ERRORS)
    return dashboard("lorafleet-overview", "lorafleet / Fleet overview",
                     "Traffic, throughput, errors and latency of the whole fleet, as clients see it.",
                     ("cluster", "replica", "adapter"), [
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
              [Target(quantile(0.5, m.TIME_PER_OUTPUT_TOKEN, CLUSTER, REPLICA), "p50"),
               Target(quantile(0.99, m.TIME_PER_OUTPUT_TOKEN, CLUSTER, REPLICA), "p99")], "s"),
        Panel("End-to-end latency", "Successful requests, from arrival at the ingress to the last byte.",
              [Target(quantile(0.5, m.REQUEST_DURATION, *req), "p50"),
               Target(quantile(0.99, m.REQUEST_DURATION, *req), "p99")], "s"),
        Panel("Running and queued requests", "Requests inside the engines: running in a batch, or waiting for one.",
              [Target(f"sum({sel(m.RUNNING_REQUESTS, CLUSTER, REPLICA)})", "running"),
               Target(f"sum({sel(m.QUEUED_REQUESTS, CLUSTER, REPLICA)})", "queued")], "short"),
        Panel("Live engine replicas", "Replicas that reported to the fleet controller recently.",
              [Target(f"max({sel(m.LIVE_REPLICAS, CLUSTER)})", "replicas")], "short", kind="stat", width=6),
        Panel("Output tokens per second (now)", "Fleet-wide generated tokens per second.",
              [Target(rate(m.GENERATION_TOKENS, CLUSTER), "tok/s")], "short", kind="stat", width=6),
        Panel("KV cache use per replica", "Fraction of each engine's KV cache in use.",
              [Target(f"max by (replica) ({sel(m.KV_CACHE_USAGE, CLUSTER, REPLICA)})", "{{replica}}")],
              "percentunit"),
    ])


def gpu() -> dict:
    util = sel(m.GPU_UTILIZATION, CLUSTER, REPLICA)
    used = sel(m.GPU_MEMORY_USED, CLUSTER, REPLICA)
    total = sel(m.GPU_MEMORY_TOTAL, CLUSTER, REPLICA)
    return dashboard("lorafleet-gpu", "lorafleet / GPUs",
                     "NVML utilisation and memory of every GPU, per node and per engine replica. Empty on "
                     "machines without a GPU: the GPU metrics are absent there, never zero.",
                     ("cluster", "replica"), [
        Panel("GPU utilisation per replica", "NVML utilisation of each GPU of each engine replica.",
              [Target(f"avg by (replica, gpu) ({util})", "{{replica}} gpu {{gpu}}")], "percentunit"),
        Panel("GPU utilisation per node", "Average over the GPUs of each Ray node.",
              [Target(f"avg by (NodeAddress) ({util})", "{{NodeAddress}}")], "percentunit"),
        Panel("GPU memory used per replica", "NVML memory in use on each GPU of each engine replica.",
              [Target(f"sum by (replica, gpu) ({used})", "{{replica}} gpu {{gpu}}")], "bytes"),
        Panel("GPU memory used per node", "Memory in use over the GPUs of each Ray node, and their size.",
              [Target(f"sum by (NodeAddress) ({used})", "{{NodeAddress}} used"),
               Target(f"sum by (NodeAddress) ({total})", "{{NodeAddress}} total")], "bytes"),
        Panel("GPU memory use", "Used / total memory of each GPU of each replica.",
              [Target(f"sum by (replica, gpu) ({used}) / sum by (replica, gpu) ({total})", "{{replica}} gpu {{gpu}}")],
              "percentunit"),
        Panel("Fleet GPU utilisation", "Average utilisation over every GPU of the fleet.",
              [Target(f"avg({util})", "utilisation")], "percentunit", kind="stat", width=6),
        Panel("GPUs reporting", "GPUs with NVML readings.",
              [Target(f"count({util})", "GPUs")], "short", kind="stat", width=6),
        Panel("KV cache use per replica", "Fraction of each engine's KV cache in use (GPU memory vLLM reserved).",
              [Target(f"max by (replica) ({sel(m.KV_CACHE_USAGE, CLUSTER, REPLICA)})", "{{replica}}")],
              "percentunit"),
    ])


def adapters() -> dict:
    zero_by_tier = zero_per(m.ADAPTER_SLOTS, CLUSTER, REPLICA, by="tier")
    zero_by_replica_tier = zero_per(m.ADAPTER_SLOTS, CLUSTER, REPLICA, by="replica, tier")
    decisions = sel(m.ROUTER_DECISIONS, CLUSTER)
    adapter_decisions = f"sum(rate({sel(m.ROUTER_DECISIONS, CLUSTER, ADAPTER_TIERS)}{RATE}))"
    requests_named = (CLUSTER, ADAPTER, NAMED_ADAPTERS)
    return dashboard("lorafleet-adapters", "lorafleet / Adapters",
                     "Where adapters live (GPU slots, host memory), how often requests find them there, the "
                     "loads and evictions that moves cost, and which adapters carry the traffic.",
                     ("cluster", "replica", "adapter"), [
        Panel("Resident adapters per replica and tier",
              "gpu: in a LoRA slot; cpu: in host memory only; loading: being read from the store.",
              [Target(f"sum by (replica, tier) ({sel(m.RESIDENT_ADAPTERS, CLUSTER, REPLICA)})", "{{replica}} {{tier}}")],
              "short", stack=True),
        Panel("GPU slot occupancy", "Adapters in LoRA slots / slots (max_loras), per replica.",
              [Target(f"sum by (replica) ({sel(m.RESIDENT_ADAPTERS, CLUSTER, REPLICA, GPU_TIER)}) / "
                      f"sum by (replica) ({sel(m.ADAPTER_SLOTS, CLUSTER, REPLICA, GPU_TIER)})", "{{replica}}")],
              "percentunit"),
        Panel("Residency hit ratio (router)",
              "Of the adapter requests routed, the share sent to a replica holding the adapter in a GPU slot, "
              "or in a GPU slot or host memory (what the router knew at decision time).",
              [Target(f"{rate(m.ROUTER_DECISIONS, CLUSTER, GPU_TIER)} / {adapter_decisions}", "GPU slot"),
               Target(f"{rate(m.ROUTER_DECISIONS, CLUSTER, HIT_TIERS)} / {adapter_decisions}",
                      "GPU slot or host memory")], "percentunit"),
        Panel("Routing decisions by residency", "Decisions per second by where the chosen replica held the adapter.",
              [Target(f"sum by (tier) (rate({decisions}{RATE}))", "{{tier}}")], "ops", stack=True),
        Panel("Adapter loads per minute", "gpu: into a LoRA slot from host memory; cpu: read from the store.",
              [Target(f"{rate(m.ADAPTER_LOADS, CLUSTER, REPLICA, by='tier')} * 60 or {zero_by_tier}", "{{tier}}")],
              "short"),
        Panel("Adapter evictions per minute", "gpu: lost a LoRA slot; cpu: dropped from host memory.",
              [Target(f"{rate(m.ADAPTER_EVICTIONS, CLUSTER, REPLICA, by='tier')} * 60 or {zero_by_tier}", "{{tier}}")],
              "short"),
        Panel("Adapter load time", "Reading an adapter from the store into an engine (vLLM add_lora).",
              [Target(quantile(0.5, m.ADAPTER_LOAD_DURATION, CLUSTER, REPLICA), "p50"),
               Target(quantile(0.99, m.ADAPTER_LOAD_DURATION, CLUSTER, REPLICA), "p99")], "s"),
        Panel("Loads and evictions per replica (per minute)", "Per replica and tier, to spot a thrashing replica.",
              [Target(f"{rate(m.ADAPTER_LOADS, CLUSTER, REPLICA, by='replica, tier')} * 60 or {zero_by_replica_tier}",
                      "{{replica}} load {{tier}}"),
               Target(f"{rate(m.ADAPTER_EVICTIONS, CLUSTER, REPLICA, by='replica, tier')} * 60 or {zero_by_replica_tier}",
                      "{{replica}} evict {{tier}}")], "short"),
        Panel("Top adapters by requests", "The 10 named adapters with the most requests per second "
              "(`_other` = adapters beyond observability.adapter_label_top_k).",
              [Target(f"topk(10, {rate(m.REQUESTS, *requests_named, by='adapter')})", "{{adapter}}")], "reqps",
              kind="table"),
        Panel("Top adapters by output tokens", "The 10 named adapters generating the most tokens per second.",
              [Target(f"topk(10, {rate(m.GENERATION_TOKENS, *requests_named, by='adapter')})", "{{adapter}}")],
              "short", kind="table"),
        Panel("Requests per second by adapter", "Every adapter label value, `_base` and `_other` included.",
              [Target(rate(m.REQUESTS, CLUSTER, ADAPTER, by="adapter"), "{{adapter}}")], "reqps", stack=True),
        Panel("Time to first token by adapter (p99)", "Streams only; slow first tokens often mean adapter loads.",
              [Target(quantile(0.99, m.TIME_TO_FIRST_TOKEN, CLUSTER, ADAPTER, by="adapter"), "{{adapter}}")], "s"),
    ])


def routing() -> dict:
    return dashboard("lorafleet-routing", "lorafleet / Routing and placement",
                     "The adapter-aware router's decisions and cost, how load spreads over replicas, and the "
                     "placement controller's passes and drift.",
                     ("cluster", "replica"), [
        Panel("Routing decisions by residency", "gpu, cpu: hits; loading, free_slot, needs_eviction, unknown: "
              "misses; base: no adapter; none: no replica could take the request.",
              [Target(rate(m.ROUTER_DECISIONS, CLUSTER, by="policy, tier"), "{{policy}} {{tier}}")], "ops", stack=True),
        Panel("Routing decision time", "One decision in the router (view refresh + policy).",
              [Target(quantile(0.5, m.ROUTER_DECISION_DURATION, CLUSTER), "p50"),
               Target(quantile(0.99, m.ROUTER_DECISION_DURATION, CLUSTER), "p99")], "s"),
        Panel("Output tokens per second per replica", "How the generated tokens spread over the replicas.",
              [Target(rate(m.GENERATION_TOKENS, CLUSTER, REPLICA, by="replica"), "{{replica}}")], "short", stack=True),
        Panel("Running requests per replica", "Requests each engine is running.",
              [Target(f"sum by (replica) ({sel(m.RUNNING_REQUESTS, CLUSTER, REPLICA)})", "{{replica}}")], "short"),
        Panel("Queued requests per replica", "Requests waiting in each engine's queue.",
              [Target(f"sum by (replica) ({sel(m.QUEUED_REQUESTS, CLUSTER, REPLICA)})", "{{replica}}")], "short"),
        Panel("Live engine replicas", "Replicas reporting to the fleet controller.",
              [Target(f"max({sel(m.LIVE_REPLICAS, CLUSTER)})", "replicas")], "short"),
        Panel("Placement planning time", "Wall time of the placement controller's planning passes.",
              [Target(quantile(0.5, m.PLANNING_DURATION, CLUSTER), "p50"),
               Target(quantile(0.99, m.PLANNING_DURATION, CLUSTER), "p99")], "s"),
        Panel("Placement actions per second", "Loads and unloads carried out for the placement, per tier.",
              [Target(rate(m.PLACEMENT_ACTIONS, CLUSTER, by="action, tier"), "{{action}} {{tier}}")], "ops", stack=True),
        Panel("Placement drift", "Actions still between the desired and the observed placement after the last pass.",
              [Target(f"max by (action, tier) ({sel(m.PLACEMENT_DRIFT, CLUSTER)})", "{{action}} {{tier}}")], "short",
              stack=True),
    ])


DASHBOARDS = {
    "lorafleet-overview.json": overview,
    "lorafleet-gpu.json": gpu,
    "lorafleet-adapters.json": adapters,
    "lorafleet-routing.json": routing,
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
