"""Every panel query of the shipped dashboards, evaluated by Prometheus (issue 16, item 6).

Each query (the chart's copy of dashboards/*.json, Grafana's variables filled in) becomes a
recording rule, and `promtool test rules` evaluates it over one synthetic scene whose
series carry the labels a real cluster gives them (tests/helm/promtool.py): the PodMonitor's
target labels and `lorafleet_release`, Ray's labels, Ray Serve's and vLLM's, and the DCGM
exporter's, scraped with and without honorLabels. The expected series of every query are
written out below, computed by hand from the scene, so a query that sums the wrong label,
loses the release filter, or misses the DCGM-to-replica join by pod returns the wrong
series and fails.

The scene, at 10 minutes, samples every minute (rates are over 2m, totals over 10m):
- release llm/fleet: the head (controller, Serve controller), worker pod A (the ingress;
  engine replica r1 on GPU 0) and worker pod B (engine replica r2 on GPU 3);
- release llm/other: pod X with replica x1, every value absurdly large: it must never show;
- DCGM: A's GPU scraped without honorLabels (user in exported_pod), B's with them, X's,
  and a notebook's GPU in another namespace: the last two must never show.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from tests.helm.promtool import dcgm, ray_pod, series, test_rules
from tests.helm.rendering import CHART

HEAD, POD_A, POD_B, POD_X = "fleet-lorafleet-head-7d2kq", "fleet-lorafleet-gpu-worker-a", "fleet-lorafleet-gpu-worker-b", "other-lorafleet-gpu-worker-x"
VARIABLES = {"__rate_interval": "2m", "__range": "10m", "release": "llm/fleet", "model": ".*", "replica": ".*", "adapter": ".*",
             "tenant": ".*"}
EVAL = "10m"


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's interpolation: known `$name`s replaced, anything else (label_replace's `$1`) kept."""
    return re.sub(r"\$([A-Za-z_]\w*)", lambda m: variables.get(m.group(1), m.group(0)), expr)


def panel_targets() -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, refId, expr) of every shipped panel query."""
    out = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((path.name, panel["title"], target["refId"], target["expr"]))
    return out


# ---- the scene ----------------------------------------------------------------------------------

def counter(per_minute: float) -> str:
    return f"0+{per_minute}x15"


def gauge(value: float) -> str:
    return f"{value}x15"


def histogram(name: str, labels: dict, bounds: tuple[str, ...], bucket: str, per_minute: int) -> list[tuple[str, str]]:
    """Every observation in the bucket ending at `bucket` (cumulative buckets, as exported)."""
    hit = bounds.index(bucket)
    return [(series(f"{name}_bucket", {**labels, "le": le}), counter(per_minute if i >= hit else 0))
            for i, le in enumerate(bounds)]


def scene() -> list[tuple[str, str]]:
    head, a, b = ray_pod(HEAD, "head", "headgroup"), ray_pod(POD_A), ray_pod(POD_B)
    x = ray_pod(POD_X, release="llm/other")
    r1, r2, x1 = {**a, "replica": "r1"}, {**b, "replica": "r2"}, {**x, "replica": "x1"}
    out: list[tuple[str, str]] = []
    add = out.append

    # ingress (pod A)
    req = "ray_lorafleet_requests_total"
    for labels, rate in (({"adapter": "poet", "endpoint": "completions", "status": "200"}, 60),
                         ({"adapter": "_base", "endpoint": "chat", "status": "200"}, 30),
                         ({"adapter": "poet", "endpoint": "completions", "status": "503"}, 6),
                         ({"adapter": "_unknown", "endpoint": "completions", "status": "404"}, 6)):
        add((series(req, {**a, "model": "llama", **labels}), counter(rate)))
    add((series(req, {**x, "model": "llama", "adapter": "poet", "endpoint": "completions", "status": "500"}), counter(6000)))
    ingress = {**a, "model": "llama", "adapter": "poet", "endpoint": "completions"}
    ttft = ("0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "+Inf")
    out += histogram("ray_lorafleet_time_to_first_token_seconds", ingress, ttft, "0.5", 60)
    out += histogram("ray_lorafleet_time_to_first_token_seconds", {**x, "model": "llama", "adapter": "poet",
                                                                      "endpoint": "completions"}, ttft, "60.0", 6000)
    latency = ("0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf")
    out += histogram("ray_lorafleet_request_duration_seconds", ingress, latency, "1.0", 60)
    usage = [({"tenant": "acme", "adapter": "poet"}, 60, 120, 600), ({"tenant": "globex", "adapter": "_base"}, 30, 60, 300)]
    for labels, requests, prompt, completion in usage:
        add((series("ray_lorafleet_usage_requests_total", {**a, **labels}), counter(requests)))
        add((series("ray_lorafleet_usage_prompt_tokens_total", {**a, **labels}), counter(prompt)))
        add((series("ray_lorafleet_usage_completion_tokens_total", {**a, **labels}), counter(completion)))
    add((series("ray_lorafleet_usage_requests_total", {**x, "tenant": "acme", "adapter": "poet"}), counter(9000)))
    add((series("ray_lorafleet_rate_limited_requests_total", {**a, "tenant": "acme", "limit": "requests"}), counter(6)))
    add((series("ray_lorafleet_rate_limited_requests_total", {**a, "tenant": "acme", "limit": "tokens"}), counter(3)))
    add((series("ray_lorafleet_rate_limited_requests_total", {**x, "tenant": "acme", "limit": "requests"}), counter(900)))
    # router (in the ingress's process)
    policy = {**a, "policy": "adapter_affinity"}
    for tier, rate in (("gpu", 48), ("cpu", 6), ("free_slot", 6), ("base", 30)):
        add((series("ray_lorafleet_router_decisions_total", {**policy, "tier": tier}), counter(rate)))
    add((series("ray_lorafleet_router_decisions_total", {**x, "policy": "adapter_affinity", "tier": "needs_eviction"}), counter(600)))
    out += histogram("ray_lorafleet_router_decision_duration_seconds", policy,
                     ("1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "+Inf"), "0.0001", 60)
    # engine replicas r1 (pod A) and r2 (pod B); x1 of the other release
    add((series("ray_lorafleet_generation_tokens_total", {**r1, "model": "llama", "adapter": "poet"}), counter(600)))
    add((series("ray_lorafleet_generation_tokens_total", {**r2, "model": "llama", "adapter": "_base"}), counter(300)))
    add((series("ray_lorafleet_generation_tokens_total", {**x1, "model": "llama", "adapter": "poet"}), counter(60000)))
    add((series("ray_lorafleet_prompt_tokens_total", {**r1, "model": "llama", "adapter": "poet"}), counter(120)))
    add((series("ray_lorafleet_prompt_tokens_total", {**r2, "model": "llama", "adapter": "_base"}), counter(60)))
    out += histogram("ray_lorafleet_time_per_output_token_seconds", {**r1, "model": "llama"},
                     ("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "+Inf"), "0.025", 60)
    out += histogram("ray_lorafleet_adapter_load_duration_seconds", r1, ("0.025", "0.05", "0.1", "0.25", "+Inf"), "0.1", 60)
    for replica, running, queued, kv in ((r1, 3, 2, 0.5), (r2, 1, 0, 0.25), (x1, 100, 100, 0.99)):
        add((series("ray_lorafleet_replica_running_requests", replica), gauge(running)))
        add((series("ray_lorafleet_replica_queued_requests", replica), gauge(queued)))
        add((series("ray_lorafleet_replica_kv_cache_usage_ratio", replica), gauge(kv)))
    for replica, tier, resident in ((r1, "gpu", 2), (r1, "cpu", 3), (r1, "loading", 1), (r2, "gpu", 1), (r2, "cpu", 1),
                                    (x1, "gpu", 50)):
        add((series("ray_lorafleet_replica_resident_adapters", {**replica, "tier": tier}), gauge(resident)))
    for replica, tier, slots in ((r1, "gpu", 4), (r1, "cpu", 8), (r2, "gpu", 4), (r2, "cpu", 8), (x1, "gpu", 64)):
        add((series("ray_lorafleet_replica_adapter_slots", {**replica, "tier": tier}), gauge(slots)))
    add((series("ray_lorafleet_adapter_loads_total", {**r1, "tier": "gpu"}), counter(6)))
    add((series("ray_lorafleet_adapter_loads_total", {**r1, "tier": "cpu"}), counter(3)))
    add((series("ray_lorafleet_adapter_evictions_total", {**r1, "tier": "gpu"}), counter(3)))
    add((series("ray_lorafleet_adapter_loads_total", {**x1, "tier": "gpu"}), counter(600)))
    for replica, util, used in ((r1, 0.8, 60e9), (r2, 0.4, 20e9), (x1, 1.0, 79e9)):
        gpu = {**replica, "gpu": "0"}
        add((series("ray_lorafleet_gpu_utilization_ratio", gpu), gauge(util)))
        add((series("ray_lorafleet_gpu_memory_used_bytes", gpu), gauge(used)))
        add((series("ray_lorafleet_gpu_memory_total_bytes", gpu), gauge(80e9)))
    # controller (head)
    add((series("ray_lorafleet_controller_live_replicas", head), gauge(2)))
    add((series("ray_lorafleet_controller_live_replicas", ray_pod("other-head", "head", "headgroup", release="llm/other")), gauge(9)))
    out += histogram("ray_lorafleet_controller_planning_duration_seconds", head, ("0.001", "0.005", "0.01", "0.05", "+Inf"),
                     "0.01", 60)
    add((series("ray_lorafleet_controller_placement_actions_total", {**head, "action": "load", "tier": "gpu"}), counter(6)))
    add((series("ray_lorafleet_controller_placement_actions_total", {**head, "action": "unload", "tier": "gpu"}), counter(3)))
    add((series("ray_lorafleet_controller_placement_drift_actions", {**head, "action": "load", "tier": "gpu"}), gauge(1)))
    add((series("ray_lorafleet_controller_placement_drift_actions", {**head, "action": "unload", "tier": "cpu"}), gauge(0)))
    # Ray Serve: the controller on the head, handles and replicas where they run
    app = {"application": "lorafleet"}
    for deployment, replica, healthy in (("EngineReplica", "r1", 1), ("EngineReplica", "r2", 1), ("Ingress", "i1", 1),
                                         ("FleetController", "c1", 1)):
        add((series("ray_serve_deployment_replica_healthy", {**head, **app, "deployment": deployment, "replica": replica}),
             gauge(healthy)))
    add((series("ray_serve_deployment_replica_healthy", {**ray_pod("other-head", "head", "headgroup", release="llm/other"),
                                                         **app, "deployment": "EngineReplica", "replica": "x1"}), gauge(1)))
    for deployment, target, status in (("EngineReplica", 2, 6), ("Ingress", 1, 6), ("FleetController", 1, 4)):
        add((series("ray_serve_autoscaling_target_replicas", {**head, **app, "deployment": deployment}), gauge(target)))
        add((series("ray_serve_deployment_status", {**head, **app, "deployment": deployment}), gauge(status)))
    add((series("ray_serve_deployment_queued_queries", {**a, **app, "deployment": "EngineReplica", "handle": "h1",
                                                        "actor_id": "a1"}), gauge(3)))
    add((series("ray_serve_deployment_queued_queries", {**b, **app, "deployment": "FleetController", "handle": "h2",
                                                        "actor_id": "a2"}), gauge(0)))
    for pod, deployment, replica, processing in ((a, "EngineReplica", "r1", 3), (b, "EngineReplica", "r2", 1),
                                                 (a, "Ingress", "i1", 4)):
        add((series("ray_serve_replica_processing_queries", {**pod, **app, "deployment": deployment, "replica": replica}),
             gauge(processing)))
    add((series("ray_serve_health_check_failures_total", {**head, **app, "deployment": "EngineReplica", "replica": "r2"}),
         counter(6)))
    out += histogram("ray_serve_replica_startup_latency_ms", {**head, **app, "deployment": "EngineReplica"},
                     ("1000", "10000", "60000", "300000", "+Inf"), "60000", 6)
    # vLLM inside the engines (ReplicaId = the replica); the dashboards read its counter and
    # histogram, not these gauges (they vanish while an engine is idle): with numbers unlike
    # lorafleet's replica gauges, a panel that read them would get the wrong answer here.
    for pod, replica, running, waiting, kv in ((a, "r1", 30, 20, 0.05), (b, "r2", 10, 7, 0.125), (x, "x1", 50, 50, 0.99)):
        vllm = {**pod, "ReplicaId": replica, "model_name": "llama", "engine": "0"}
        add((series("ray_vllm_num_requests_running", vllm), gauge(running)))
        add((series("ray_vllm_num_requests_waiting", vllm), gauge(waiting)))
        add((series("ray_vllm_kv_cache_usage_perc", vllm), gauge(kv)))
    add((series("ray_vllm_num_preemptions_total", {**a, "ReplicaId": "r1", "model_name": "llama", "engine": "0"}), counter(6)))
    out += histogram("ray_vllm_request_queue_time_seconds", {**a, "ReplicaId": "r1", "model_name": "llama", "engine": "0"},
                     ("0.3", "0.5", "0.8", "1.0", "+Inf"), "0.5", 60)
    # DCGM exporter
    for pod, gpu, honor, util, used_mib, power, temp, xid in ((POD_A, 0, False, 80, 61440, 300, 65, 0),
                                                               (POD_B, 3, True, 40, 20480, 150, 55, 79),
                                                               (POD_X, 1, False, 99, 80000, 400, 90, 48)):
        labels = dcgm(pod, gpu, honor)
        for name, value in (("DCGM_FI_DEV_GPU_UTIL", util), ("DCGM_FI_DEV_FB_USED", used_mib),
                            ("DCGM_FI_DEV_FB_FREE", 81920 - used_mib), ("DCGM_FI_DEV_POWER_USAGE", power),
                            ("DCGM_FI_DEV_GPU_TEMP", temp), ("DCGM_FI_DEV_XID_ERRORS", xid)):
            add((series(name, labels), gauge(value)))
    notebook = dcgm("jupyter-alice", 2, honor_labels=True, namespace="team-b")
    add((series("DCGM_FI_DEV_GPU_UTIL", notebook), gauge(100)))
    add((series("DCGM_FI_DEV_FB_USED", notebook), gauge(81000)))
    return out


# ---- what every query must return from it ----------------------------------------------------------

MIB = 1048576
ADAPTER_HIT_RATES = {"gpu": 0.8, "cpu": 0.1, "free_slot": 0.1, "base": 0.5}
EXPECTED: dict[tuple[str, str, str], list[tuple[dict, float]]] = {
    # overview
    ("lorafleet-overview.json", "Requests per second", "A"): [
        ({"endpoint": "completions", "status": "200"}, 1.0), ({"endpoint": "chat", "status": "200"}, 0.5),
        ({"endpoint": "completions", "status": "503"}, 0.1), ({"endpoint": "completions", "status": "404"}, 0.1)],
    ("lorafleet-overview.json", "Tokens per second", "A"): [({}, 15.0)],
    ("lorafleet-overview.json", "Tokens per second", "B"): [({}, 3.0)],
    ("lorafleet-overview.json", "Error ratio", "A"): [({}, 0.2 / 1.7)],
    ("lorafleet-overview.json", "Errors per second by status", "A"): [({"status": "503"}, 0.1), ({"status": "404"}, 0.1)],
    ("lorafleet-overview.json", "Time to first token", "A"): [({}, 0.375)],
    ("lorafleet-overview.json", "Time to first token", "B"): [({}, 0.4975)],
    ("lorafleet-overview.json", "Time per output token", "A"): [({}, 0.0175)],
    ("lorafleet-overview.json", "Time per output token", "B"): [({}, 0.02485)],
    ("lorafleet-overview.json", "End-to-end latency", "A"): [({}, 0.75)],
    ("lorafleet-overview.json", "End-to-end latency", "B"): [({}, 0.995)],
    ("lorafleet-overview.json", "Running and queued requests", "A"): [({}, 4.0)],
    ("lorafleet-overview.json", "Running and queued requests", "B"): [({}, 2.0)],
    ("lorafleet-overview.json", "Live engine replicas", "A"): [({}, 2.0)],
    ("lorafleet-overview.json", "Output tokens per second (now)", "A"): [({}, 15.0)],
    ("lorafleet-overview.json", "KV cache use per replica", "A"): [({"replica": "r1"}, 0.5), ({"replica": "r2"}, 0.25)],
    # GPUs
    ("lorafleet-gpu.json", "GPU utilisation (DCGM)", "A"): [({"pod": POD_A, "gpu": "0"}, 0.8), ({"pod": POD_B, "gpu": "3"}, 0.4)],
    ("lorafleet-gpu.json", "GPU memory use (DCGM)", "A"): [({"pod": POD_A, "gpu": "0"}, 0.75), ({"pod": POD_B, "gpu": "3"}, 0.25)],
    ("lorafleet-gpu.json", "GPU memory used (DCGM)", "A"): [({"pod": POD_A, "gpu": "0"}, 61440 * MIB),
                                                            ({"pod": POD_B, "gpu": "3"}, 20480 * MIB)],
    ("lorafleet-gpu.json", "GPU power (DCGM)", "A"): [({"pod": POD_A, "gpu": "0"}, 300), ({"pod": POD_B, "gpu": "3"}, 150)],
    ("lorafleet-gpu.json", "GPU temperature (DCGM)", "A"): [({"pod": POD_A, "gpu": "0"}, 65), ({"pod": POD_B, "gpu": "3"}, 55)],
    ("lorafleet-gpu.json", "XID errors (DCGM)", "A"): [({"pod": POD_A, "gpu": "0"}, 0), ({"pod": POD_B, "gpu": "3"}, 79)],
    ("lorafleet-gpu.json", "Engine replicas per pod", "A"): [({"pod": POD_A, "replica": "r1"}, 3), ({"pod": POD_B, "replica": "r2"}, 1)],
    ("lorafleet-gpu.json", "GPU utilisation per replica (NVML)", "A"): [({"replica": "r1", "gpu": "0"}, 0.8),
                                                                        ({"replica": "r2", "gpu": "0"}, 0.4)],
    ("lorafleet-gpu.json", "GPU memory use per replica (NVML)", "A"): [({"replica": "r1", "gpu": "0"}, 0.75),
                                                                       ({"replica": "r2", "gpu": "0"}, 0.25)],
    ("lorafleet-gpu.json", "GPU memory used per node (NVML)", "A"): "per node used",
    ("lorafleet-gpu.json", "GPU memory used per node (NVML)", "B"): "per node total",
    ("lorafleet-gpu.json", "Fleet GPU utilisation (NVML)", "A"): [({}, 0.6)],
    ("lorafleet-gpu.json", "GPUs reporting (NVML)", "A"): [({}, 2)],
    ("lorafleet-gpu.json", "KV cache use per replica", "A"): [({"replica": "r1"}, 0.5), ({"replica": "r2"}, 0.25)],
    # adapters
    ("lorafleet-adapters.json", "Resident adapters per replica and tier", "A"): [
        ({"replica": "r1", "tier": "gpu"}, 2), ({"replica": "r1", "tier": "cpu"}, 3), ({"replica": "r1", "tier": "loading"}, 1),
        ({"replica": "r2", "tier": "gpu"}, 1), ({"replica": "r2", "tier": "cpu"}, 1)],
    ("lorafleet-adapters.json", "GPU slot occupancy", "A"): [({"replica": "r1"}, 0.5), ({"replica": "r2"}, 0.25)],
    ("lorafleet-adapters.json", "Residency hit ratio (router)", "A"): [({}, 0.8)],
    ("lorafleet-adapters.json", "Residency hit ratio (router)", "B"): [({}, 0.9)],
    ("lorafleet-adapters.json", "Routing decisions by residency", "A"): [({"tier": t}, v) for t, v in ADAPTER_HIT_RATES.items()],
    ("lorafleet-adapters.json", "Adapter loads per minute", "A"): [({"tier": "gpu"}, 6), ({"tier": "cpu"}, 3)],
    ("lorafleet-adapters.json", "Adapter evictions per minute", "A"): [({"tier": "gpu"}, 3), ({"tier": "cpu"}, 0)],
    ("lorafleet-adapters.json", "Adapter load time", "A"): [({}, 0.075)],
    ("lorafleet-adapters.json", "Adapter load time", "B"): [({}, 0.0995)],
    ("lorafleet-adapters.json", "Loads and evictions per replica (per minute)", "A"): [
        ({"replica": "r1", "tier": "gpu"}, 6), ({"replica": "r1", "tier": "cpu"}, 3),
        ({"replica": "r2", "tier": "gpu"}, 0), ({"replica": "r2", "tier": "cpu"}, 0)],
    ("lorafleet-adapters.json", "Loads and evictions per replica (per minute)", "B"): [
        ({"replica": "r1", "tier": "gpu"}, 3), ({"replica": "r1", "tier": "cpu"}, 0),
        ({"replica": "r2", "tier": "gpu"}, 0), ({"replica": "r2", "tier": "cpu"}, 0)],
    ("lorafleet-adapters.json", "Top adapters by requests", "A"): [({"adapter": "poet"}, 1.1)],
    ("lorafleet-adapters.json", "Top adapters by output tokens", "A"): [({"adapter": "poet"}, 10)],
    ("lorafleet-adapters.json", "Requests per second by adapter", "A"): [
        ({"adapter": "poet"}, 1.1), ({"adapter": "_base"}, 0.5), ({"adapter": "_unknown"}, 0.1)],
    ("lorafleet-adapters.json", "Time to first token by adapter (p99)", "A"): [({"adapter": "poet"}, 0.4975)],
    # routing and placement
    ("lorafleet-routing.json", "Routing decisions by residency", "A"): [
        ({"policy": "adapter_affinity", "tier": t}, v) for t, v in ADAPTER_HIT_RATES.items()],
    ("lorafleet-routing.json", "Routing decision time", "A"): [({}, 7.5e-05)],
    ("lorafleet-routing.json", "Routing decision time", "B"): [({}, 9.95e-05)],
    ("lorafleet-routing.json", "Output tokens per second per replica", "A"): [({"replica": "r1"}, 10), ({"replica": "r2"}, 5)],
    ("lorafleet-routing.json", "Running requests per replica", "A"): [({"replica": "r1"}, 3), ({"replica": "r2"}, 1)],
    ("lorafleet-routing.json", "Queued requests per replica", "A"): [({"replica": "r1"}, 2), ({"replica": "r2"}, 0)],
    ("lorafleet-routing.json", "Live engine replicas", "A"): [({}, 2)],
    ("lorafleet-routing.json", "Placement planning time", "A"): [({}, 0.0075)],
    ("lorafleet-routing.json", "Placement planning time", "B"): [({}, 0.00995)],
    ("lorafleet-routing.json", "Placement actions per second", "A"): [({"action": "load", "tier": "gpu"}, 0.1),
                                                                      ({"action": "unload", "tier": "gpu"}, 0.05)],
    ("lorafleet-routing.json", "Placement drift", "A"): [({"action": "load", "tier": "gpu"}, 1), ({"action": "unload", "tier": "cpu"}, 0)],
    # Ray Serve and vLLM
    ("lorafleet-serve.json", "Healthy replicas by deployment", "A"): [
        ({"deployment": "EngineReplica"}, 2), ({"deployment": "Ingress"}, 1), ({"deployment": "FleetController"}, 1)],
    ("lorafleet-serve.json", "Target replicas by deployment", "A"): [
        ({"deployment": "EngineReplica"}, 2), ({"deployment": "Ingress"}, 1), ({"deployment": "FleetController"}, 1)],
    ("lorafleet-serve.json", "Deployment state", "A"): [
        ({"deployment": "EngineReplica"}, 6), ({"deployment": "Ingress"}, 6), ({"deployment": "FleetController"}, 4)],
    ("lorafleet-serve.json", "Requests queued at handles", "A"): [({"deployment": "EngineReplica"}, 3),
                                                                  ({"deployment": "FleetController"}, 0)],
    ("lorafleet-serve.json", "Requests in replicas", "A"): [({"deployment": "EngineReplica"}, 4), ({"deployment": "Ingress"}, 4)],
    ("lorafleet-serve.json", "Replica start time", "A"): [({"deployment": "EngineReplica"}, 35.0)],
    ("lorafleet-serve.json", "Replica start time", "B"): [({"deployment": "EngineReplica"}, 59.5)],
    ("lorafleet-serve.json", "Failed health checks per minute", "A"): [
        ({"deployment": "EngineReplica"}, 6), ({"deployment": "Ingress"}, 0), ({"deployment": "FleetController"}, 0)],
    ("lorafleet-serve.json", "vLLM running and waiting requests per replica", "A"): [({"replica": "r1"}, 3),
                                                                                     ({"replica": "r2"}, 1)],
    ("lorafleet-serve.json", "vLLM running and waiting requests per replica", "B"): [({"replica": "r1"}, 2),
                                                                                     ({"replica": "r2"}, 0)],
    ("lorafleet-serve.json", "vLLM preemptions per minute", "A"): [({"ReplicaId": "r1"}, 6), ({"ReplicaId": "r2"}, 0)],
    ("lorafleet-serve.json", "vLLM KV cache use", "A"): [({"replica": "r1"}, 0.5), ({"replica": "r2"}, 0.25)],
    ("lorafleet-serve.json", "vLLM queue time", "A"): [({}, 0.4)],
    ("lorafleet-serve.json", "vLLM queue time", "B"): [({}, 0.498)],
    # usage and limits
    ("lorafleet-usage.json", "Requests per second by tenant", "A"): [({"tenant": "acme"}, 1), ({"tenant": "globex"}, 0.5)],
    ("lorafleet-usage.json", "Tokens per second by tenant", "A"): [({"tenant": "acme"}, 2), ({"tenant": "globex"}, 1)],
    ("lorafleet-usage.json", "Tokens per second by tenant", "B"): [({"tenant": "acme"}, 10), ({"tenant": "globex"}, 5)],
    ("lorafleet-usage.json", "Rate-limited requests per second", "A"): [
        ({"tenant": "acme", "limit": "requests"}, 0.1), ({"tenant": "acme", "limit": "tokens"}, 0.05), ({"tenant": "globex"}, 0)],
    ("lorafleet-usage.json", "Share of requests rate-limited by tenant", "A"): [({"tenant": "acme"}, 0.15 / 1.15),
                                                                              ({"tenant": "globex"}, 0)],
    ("lorafleet-usage.json", "Usage over the time range by tenant and adapter", "A"): [
        ({"tenant": "acme", "adapter": "poet"}, 600), ({"tenant": "globex", "adapter": "_base"}, 300)],
    ("lorafleet-usage.json", "Usage over the time range by tenant and adapter", "B"): [
        ({"tenant": "acme", "adapter": "poet"}, 1200), ({"tenant": "globex", "adapter": "_base"}, 600)],
    ("lorafleet-usage.json", "Usage over the time range by tenant and adapter", "C"): [
        ({"tenant": "acme", "adapter": "poet"}, 6000), ({"tenant": "globex", "adapter": "_base"}, 3000)],
    ("lorafleet-usage.json", "Top tenants by generated tokens", "A"): [({"tenant": "acme"}, 10), ({"tenant": "globex"}, 5)],
    ("lorafleet-usage.json", "Top adapters by requests (all tenants)", "A"): [({"adapter": "poet"}, 1), ({"adapter": "_base"}, 0.5)],
}


def _expected(key: tuple[str, str, str]) -> list[tuple[dict, float]]:
    from tests.helm.promtool import pod_ip

    value = EXPECTED[key]
    if value == "per node used":
        return [({"NodeAddress": pod_ip(POD_A)}, 60e9), ({"NodeAddress": pod_ip(POD_B)}, 20e9)]
    if value == "per node total":
        return [({"NodeAddress": pod_ip(POD_A)}, 80e9), ({"NodeAddress": pod_ip(POD_B)}, 80e9)]
    return value


def _record_name(index: int) -> str:
    return f"lorafleet_dashboard:query_{index}"


def _labels(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


ROUND_TO = 1e-9


def prometheus_round(value: float) -> float:
    """PromQL's round(v, 1e-9), computed as Prometheus computes it."""
    inverse = 1.0 / ROUND_TO
    return math.floor(value * inverse + 0.5) / inverse


def _promtool_case(targets, variables: dict[str, str], expected) -> tuple[list[dict], list[dict]]:
    """Rules and cases. promtool compares values exactly, so small results (ratios,
    quantiles) are rounded to 1e-9 on both sides: 0.1 + 0.2 must not fail a panel."""
    rules, checks = [], []
    for i, (*_, expr) in enumerate(targets):
        samples = expected(i)
        small = all(abs(v) < 1e6 for _, v in samples)
        query = substitute(expr, variables)
        rules.append({"record": _record_name(i), "expr": f"round({query}, {ROUND_TO})" if small else query})
        checks.append({"expr": _record_name(i), "eval_time": EVAL, "exp_samples": [
            {"labels": _labels(_record_name(i), labels), "value": prometheus_round(v) if small else v} for labels, v in samples]})
    tests = [{"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in scene()],
              "promql_expr_test": checks}]
    return [{"name": "lorafleet-dashboards", "rules": rules}], tests


def test_every_shipped_panel_query_has_its_expected_series_written_down():
    keys = {(file, title, ref) for file, title, ref, _ in panel_targets()}
    assert keys == set(EXPECTED), (f"panels without expectations: {sorted(keys - set(EXPECTED))}; "
                                   f"expectations without panels: {sorted(set(EXPECTED) - keys)}")


def test_every_panel_query_returns_its_expected_series_from_cluster_labelled_series(tmp_path):
    targets = panel_targets()
    groups, tests = _promtool_case(targets, VARIABLES, lambda i: _expected(targets[i][:3]))
    result = test_rules(tmp_path, groups, tests)
    failures = result.stdout + result.stderr
    # promtool names the failing rule; say which panel it is.
    for i, (file, title, ref, _) in enumerate(targets):
        failures = failures.replace(f"expr: \"{_record_name(i)}\"", f"expr: \"{_record_name(i)}\" ({file} / {title} / {ref})")
    assert result.returncode == 0, failures


DCGM_PANELS = ["GPU utilisation (DCGM)", "GPU power (DCGM)", "XID errors (DCGM)", "Engine replicas per pod"]


@pytest.mark.parametrize("replica, pod, gpu", [("r1", POD_A, "0"), ("r2", POD_B, "3")])
def test_dcgm_panels_follow_the_replica_variable_to_the_pod_that_runs_it(tmp_path, replica, pod, gpu):
    targets = [t for t in panel_targets() if t[0] == "lorafleet-gpu.json" and t[1] in DCGM_PANELS]
    assert [t[1] for t in targets] == DCGM_PANELS

    def expected(i: int) -> list[tuple[dict, float]]:
        title = targets[i][1]
        if title == "Engine replicas per pod":
            return [(labels, v) for labels, v in _expected(targets[i][:3]) if labels["replica"] == replica]
        return [(labels, v) for labels, v in _expected(targets[i][:3]) if labels == {"pod": pod, "gpu": gpu}]

    groups, tests = _promtool_case(targets, {**VARIABLES, "replica": replica}, expected)
    result = test_rules(tmp_path, groups, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_query_without_the_release_filter_would_be_caught(tmp_path):
    # Guards the test above: the other release's series are in the scene, so dropping the
    # filter changes the answer.
    targets = [t for t in panel_targets() if t[:3] == ("lorafleet-overview.json", "Live engine replicas", "A")]
    unfiltered = [(f, t, r, expr.replace('lorafleet_release=~"$release"', "")) for f, t, r, expr in targets]
    groups, tests = _promtool_case(unfiltered, VARIABLES, lambda i: _expected(targets[i][:3]))
    assert test_rules(tmp_path, groups, tests).returncode != 0
