"""lorafleet's Prometheus metrics: every definition, and the helpers that record them.

Recorded through Ray's metrics API (`ray.util.metrics`), so they appear on every Ray
node's metrics endpoint next to Ray's and Ray Serve's own metrics: the endpoint KubeRay
users already scrape (port 8080; `lorafleet serve` opens it at `server.metrics_port`).
Ray prefixes application metrics with `ray_`: `lorafleet_requests_total` is scraped as
`ray_lorafleet_requests_total` (as vLLM's metrics under Ray Serve LLM are `ray_vllm_*`),
and Ray adds `Component`, `NodeAddress`, `SessionName`, `Version` and `WorkerId` labels.
Ray ships values from each process to its node's agent about every 10 s
(`metrics_report_interval_ms`), so a scrape lags reality by up to that much. Histogram
counts and buckets are exact, but Ray 2.60 rebuilds a histogram's `_sum` from bucket
midpoints (ray-project/ray#64852): use quantiles, not `_sum / _count` averages.

Where each metric is recorded (one or two lines in each component):

- ingress (`deployments/serve/ingress.py`): requests by model, adapter, endpoint and status;
  end-to-end latency and time to first token as the client sees them (`RequestObservation`).
- engine replica (`deployments/engine/vllm_engine.py`, `engine_replica.py`): prompt and generated
  tokens by adapter from each response's usage (`usage_probe` / `record_usage`); vLLM's
  time per output token per finished request; adapter loads and evictions per tier
  (`ObservedResidency`); adapter load time; residency, queue, running requests and KV cache
  use every stats period (`publish_replica_stats`); GPU utilisation and memory via NVML
  (`GpuMonitor`, absent without a GPU).
- router (`deployments/serve/router.py`, in the caller's process): decisions by the chosen
  replica's residency tier and decision time (`DecisionRecorder`).
- controller (`deployments/serve/controller.py`): live replicas reporting (`LiveReplicasGauge`);
  the placement planner's hooks are `record_placement_pass` and `record_placement_actions`.

Cost: a Ray record call is ~2 us. Nothing here runs per token: the token stream is only
timed at its first chunk and its end, token counts come from the usage vLLM computes
anyway, and the router's decision counter is batched (flushed once a second from the
event loop). GPU reads run in a worker thread. Metric objects are created on first use
in each process; outside a Ray worker (unit tests, tools) recording is a no-op unless a
backend is installed with `use_backend`.

Adapter label values are bounded by `cluster.labels.AdapterLabels`: the busiest
`observability.adapter_label_top_k` adapters are named, the rest are `_other`, base-model
requests `_base`, requests for no servable model `_unknown`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cluster.labels import UNKNOWN, AdapterLabels
from cluster.residency import ResidencyTracker
from cluster.stats import ReplicaStats, Tier

if TYPE_CHECKING:
    from deployments.config import LorafleetConfig

logger = logging.getLogger(__name__)

RAY_PREFIX = "ray_"

# ---- definitions -----------------------------------------------------------------------

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
ADAPTER_LOAD_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DECISION_BUCKETS_S = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 5e-2)
PLANNING_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name as defined (`lorafleet_*`, units in the name), type,
    help text, label names and, for histograms, bucket upper bounds."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def exported_name(self) -> str:
        """The name Prometheus scrapes from Ray's endpoint."""
        return RAY_PREFIX + self.name


def _counter(name: str, description: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", description, labels)


def _gauge(name: str, description: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "gauge", description, labels)


def _histogram(name: str, description: str, buckets: tuple[float, ...], *labels: str) -> MetricSpec:
    return MetricSpec(name, "histogram", description, labels, buckets)


# ingress
REQUESTS = _counter(
    "lorafleet_requests_total",
    "API requests (completions, chat) by base model, adapter label, endpoint and HTTP status "
    "(a stream that failed after its 200 counts with the failure's status; 499 = client went away).",
    "model", "adapter", "endpoint", "status")
REQUEST_DURATION = _histogram(
    "lorafleet_request_duration_seconds",
    "End-to-end time of successful requests at the ingress, from arrival to the last byte.",
    LATENCY_BUCKETS_S, "model", "adapter", "endpoint")
TIME_TO_FIRST_TOKEN = _histogram(
    "lorafleet_time_to_first_token_seconds",
    "Time from a streamed request's arrival at the ingress to its first body chunk (streams only).",
    TTFT_BUCKETS_S, "model", "adapter", "endpoint")
# engine replicas
PROMPT_TOKENS = _counter(
    "lorafleet_prompt_tokens_total",
    "Prompt tokens of completed requests (from the response usage), by adapter and replica.",
    "model", "adapter", "replica")
GENERATION_TOKENS = _counter(
    "lorafleet_generation_tokens_total",
    "Generated tokens of completed requests (from the response usage), by adapter and replica.",
    "model", "adapter", "replica")
TIME_PER_OUTPUT_TOKEN = _histogram(
    "lorafleet_time_per_output_token_seconds",
    "vLLM's per-request time per output token after the first (decode time / (tokens - 1)).",
    TPOT_BUCKETS_S, "model", "replica")
RESIDENT_ADAPTERS = _gauge(
    "lorafleet_replica_resident_adapters",
    "Adapters on a replica by tier: gpu = in a LoRA slot, cpu = in host memory only, loading = being read.",
    "model", "replica", "tier")
ADAPTER_SLOTS = _gauge(
    "lorafleet_replica_adapter_slots",
    "Adapter capacity by tier: gpu = LoRA slots (max_loras), cpu = host cache (max_cpu_loras, "
    "which also holds the adapters in GPU slots).",
    "model", "replica", "tier")
ADAPTER_LOADS = _counter(
    "lorafleet_adapter_loads_total",
    "Adapters brought into a tier: gpu = into a LoRA slot (from host memory), cpu = read from the "
    "store into host memory.",
    "model", "replica", "tier")
ADAPTER_EVICTIONS = _counter(
    "lorafleet_adapter_evictions_total",
    "Adapters that left a tier: gpu = lost their LoRA slot, cpu = dropped from host memory.",
    "model", "replica", "tier")
ADAPTER_LOAD_FAILURES = _counter(
    "lorafleet_adapter_load_failures_total",
    "Adapter loads that failed on a replica, by reason: store (missing from the store or not matching its "
    "manifest's sha256), refused (the engine could not use the weights: unservable fleet-wide from then on).",
    "model", "replica", "reason")
ADAPTER_LOAD_DURATION = _histogram(
    "lorafleet_adapter_load_duration_seconds",
    "Time to read an adapter from the store into the engine (vLLM add_lora).",
    ADAPTER_LOAD_BUCKETS_S, "model", "replica")
QUEUED_REQUESTS = _gauge("lorafleet_replica_queued_requests", "Requests waiting in the engine's queue.", "model", "replica")
RUNNING_REQUESTS = _gauge("lorafleet_replica_running_requests", "Requests the engine is running.", "model", "replica")
KV_CACHE_USAGE = _gauge("lorafleet_replica_kv_cache_usage_ratio", "Fraction of the engine's KV cache in use (0-1).", "model", "replica")
GPU_UTILIZATION = _gauge(
    "lorafleet_gpu_utilization_ratio",
    "NVML GPU utilisation (0-1) of each GPU of a replica; absent where there is no GPU.",
    "model", "replica", "gpu")
GPU_MEMORY_USED = _gauge("lorafleet_gpu_memory_used_bytes", "NVML memory in use on each GPU of a replica.", "model", "replica", "gpu")
GPU_MEMORY_TOTAL = _gauge("lorafleet_gpu_memory_total_bytes", "NVML memory size of each GPU of a replica.", "model", "replica", "gpu")
# router
ROUTER_DECISIONS = _counter(
    "lorafleet_router_decisions_total",
    "Routing decisions by the chosen replica's residency of the request's adapter: gpu, cpu (hits), "
    "loading, free_slot, needs_eviction, unknown (misses), base (no adapter), none (no replica). `model` is the base "
    "whose engine deployment the router serves.",
    "model", "policy", "tier")
ROUTER_DECISION_DURATION = _histogram(
    "lorafleet_router_decision_duration_seconds",
    "Time of one routing decision in the router (view refresh + policy).",
    DECISION_BUCKETS_S, "model", "policy")
# controller
LIVE_REPLICAS = _gauge(
    "lorafleet_controller_live_replicas", "Engine replicas of each base model that reported to the fleet controller recently.",
    "model")
PLANNING_DURATION = _histogram(
    "lorafleet_controller_planning_duration_seconds", "Wall time of one placement planning pass (one per base model).",
    PLANNING_BUCKETS_S, "model")
PLACEMENT_ACTIONS = _counter(
    "lorafleet_controller_placement_actions_total", "Placement actions carried out, by action (load, unload) and tier.",
    "model", "action", "tier")
PLACEMENT_DRIFT = _gauge(
    "lorafleet_controller_placement_drift_actions",
    "Actions between the desired and the observed placement after the last planning pass, by action and tier.",
    "model", "action", "tier")
AUTOSCALING_TARGET = _gauge(
    "lorafleet_autoscaling_target_replicas",
    "Engine replicas the adapter-aware autoscaler asks for (autoscaling.enabled), relayed to Ray Serve, by base.", "model")
AUTOSCALING_NEED = _gauge(
    "lorafleet_autoscaling_needed_replicas",
    "Replicas the demand needs now (the binding one of compute, LoRA slots and host memory), before the forecast, by base.",
    "model")

# ingress: the usage ledger and per-key limits (tenant = the key's tenant, bounded by the keys file)
USAGE_REQUESTS = _counter(
    "lorafleet_usage_requests_total",
    "Completed requests as recorded in the usage ledger, by tenant, base model and adapter label.", "tenant", "model", "adapter")
USAGE_PROMPT_TOKENS = _counter(
    "lorafleet_usage_prompt_tokens_total",
    "Prompt tokens as recorded in the usage ledger (the engine's final usage), by tenant, base model and adapter label.",
    "tenant", "model", "adapter")
USAGE_COMPLETION_TOKENS = _counter(
    "lorafleet_usage_completion_tokens_total",
    "Generated tokens as recorded in the usage ledger (the engine's final usage), by tenant, base model and adapter label.",
    "tenant", "model", "adapter")
RATE_LIMITED = _counter(
    "lorafleet_rate_limited_requests_total",
    "Requests refused with 429 by a per-key limit, by tenant and limit (requests or tokens).", "tenant", "limit")
USAGE_ESTIMATED = _counter(
    "lorafleet_usage_estimated_total",
    "Requests whose client left mid-generation and whose engine never reported what it produced (the replica "
    "died): billed what the ingress saw leave the engine, a lower bound.")
LEDGER_WRITE_FAILURES = _counter(
    "lorafleet_ledger_write_failures_total",
    "Failed writes of recorded usage to the ledger's database (the usage is kept and retried).")
RATE_LIMIT_STORE_UP = _gauge(
    "lorafleet_rate_limit_store_up_replicas",
    "Per ingress replica, 1 while its shared rate-limit store (server.usage.backend: postgres) answers and per-key "
    "limits are exact across replicas; 0 while it is down and server.limits.when_store_down applies (sum: replicas "
    "with exact limits). Absent without a shared store.")
# engine replicas: the vLLM plugin
VLLM_PLUGIN_APPLIED = _gauge(
    "lorafleet_vllm_plugin_applied_replicas",
    "1 if lorafleet's vLLM plugin (the LoRA kernel fix) is in place in a replica's engine and was written for its "
    "vLLM version, else 0.",
    "model", "replica", "vllm_version")

# Every definition above, in definition order (for docs, dashboards checks and tests).
ALL_METRICS: tuple[MetricSpec, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, MetricSpec))


# ---- backends and per-process state ----------------------------------------------------


class _NullMetric:
    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        pass

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass


class NullBackend:
    """Records nothing: the backend outside Ray workers."""

    def create(self, spec: MetricSpec) -> Any:
        return _NullMetric()


class RayBackend:
    """`ray.util.metrics` objects: exported by the node's metrics agent."""

    def create(self, spec: MetricSpec) -> Any:
        from ray.util.metrics import Counter, Gauge, Histogram

        if spec.kind == "counter":
            return Counter(spec.name, spec.description, spec.labels)
        if spec.kind == "gauge":
            return Gauge(spec.name, spec.description, spec.labels)
        return Histogram(spec.name, spec.description, list(spec.buckets), spec.labels)


def _default_backend() -> Any:
    import ray

    return RayBackend() if ray.is_initialized() else NullBackend()


class _ProcessMetrics:
    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._made: dict[str, Any] = {}

    def get(self, spec: MetricSpec) -> Any:
        metric = self._made.get(spec.name)
        if metric is None:
            metric = self._made[spec.name] = self.backend.create(spec)
        return metric


_metrics: _ProcessMetrics | None = None
_model = ""
_labels = AdapterLabels(50)


def use_backend(backend: Any | None) -> None:
    """Install a backend for this process (tests); None = choose again on next use."""
    global _metrics
    _metrics = _ProcessMetrics(backend) if backend is not None else None


def metric(spec: MetricSpec) -> Any:
    """The process's metric object for `spec`, created on first use."""
    global _metrics
    if _metrics is None:
        _metrics = _ProcessMetrics(_default_backend())
    return _metrics.get(spec)


def configure(config: LorafleetConfig) -> None:
    """Once per process: the `model` label value (an engine replica's base; the ingress,
    which serves every base, labels each request with its own) and the adapter label bound."""
    global _model, _labels
    obs = config.observability
    _model = config.served_names[0] if len(config.models) == 1 else ""
    _labels = AdapterLabels(obs.adapter_label_top_k, obs.adapter_label_review_s)


def adapter_labels() -> AdapterLabels:
    return _labels


# ---- ingress ---------------------------------------------------------------------------


class RequestObservation:
    """One API request as its client sees it, from arrival at the ingress to its last
    byte. The ingress creates one per request, says which adapter it resolved to, marks a
    stream's first chunk and finishes it once with the final status."""

    __slots__ = ("endpoint", "model", "adapter", "status", "started", "ttft_s", "admission_s", "_done")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.model = _model  # until resolved: the one base of a one-base fleet, else ""
        self.adapter = UNKNOWN
        self.status = 200
        self.started = time.perf_counter()
        self.ttft_s: float | None = None
        self.admission_s: float | None = None  # arrival -> the admission gate's answer
        self._done = False

    def resolved(self, adapter: str | None, model: str | None = None) -> None:
        """The request is for `adapter` (None = the base model) of base `model`."""
        self.adapter = _labels.label(adapter)
        if model is not None:
            self.model = model

    def first_chunk(self) -> None:
        self.ttft_s = time.perf_counter() - self.started

    def admission_decided(self) -> None:
        self.admission_s = time.perf_counter() - self.started

    def server_timing(self, *, admitted: bool = True) -> str:
        """A `Server-Timing` header value (W3C): `admission` is the time from the request's
        arrival at the ingress to the admission gate's answer (authentication, the body,
        checks, resolving the model, the gate); `engine`, on an admitted request, the time
        from there to the engine's response head. What a client measures beyond their sum
        was spent before the ingress (Ray's HTTP proxy, the network) or after the head."""
        if self.admission_s is None:
            return ""
        parts = [f"admission;dur={self.admission_s * 1000:.1f}"]
        if admitted:
            parts.append(f"engine;dur={(time.perf_counter() - self.started - self.admission_s) * 1000:.1f}")
        return ", ".join(parts)

    def finish(self, status: int | None = None) -> None:
        """Record the request; later calls do nothing."""
        if self._done:
            return
        self._done = True
        if status is not None:
            self.status = status
        record_request(self.endpoint, self.adapter, self.status, time.perf_counter() - self.started, self.ttft_s,
                       model=self.model)


def record_request(endpoint: str, adapter_label: str, status: int, duration_s: float, ttft_s: float | None,
                   model: str | None = None) -> None:
    tags = {"model": _model if model is None else model, "adapter": adapter_label, "endpoint": endpoint}
    metric(REQUESTS).inc(1, {**tags, "status": str(status)})
    if 200 <= status < 300:
        metric(REQUEST_DURATION).observe(duration_s, tags)
        if ttft_s is not None:
            metric(TIME_TO_FIRST_TOKEN).observe(ttft_s, tags)


def record_ledger_usage(tenant: str, adapter: str | None, prompt_tokens: int, completion_tokens: int,
                        model: str | None = None) -> None:
    """A request the usage ledger recorded (`adapter` None = the base model) of base `model`."""
    tags = {"tenant": tenant, "model": _model if model is None else model, "adapter": _labels.label(adapter)}
    metric(USAGE_REQUESTS).inc(1, tags)
    if prompt_tokens:
        metric(USAGE_PROMPT_TOKENS).inc(prompt_tokens, tags)
    if completion_tokens:
        metric(USAGE_COMPLETION_TOKENS).inc(completion_tokens, tags)


def record_rate_limited(tenant: str, limit: str) -> None:
    metric(RATE_LIMITED).inc(1, {"tenant": tenant, "limit": limit})


def record_estimated_usage(count: int = 1) -> None:
    metric(USAGE_ESTIMATED).inc(count)


def record_ledger_write_failure() -> None:
    metric(LEDGER_WRITE_FAILURES).inc(1)


def record_rate_limit_store(up: bool) -> None:
    metric(RATE_LIMIT_STORE_UP).set(1.0 if up else 0.0)


def record_plugin_state(replica_id: str, state: dict) -> None:
    applied = 1.0 if state["applied"] and state["version_ok"] else 0.0
    metric(VLLM_PLUGIN_APPLIED).set(applied, {"model": _model, "replica": replica_id, "vllm_version": state["vllm_version"]})


# ---- engine replica --------------------------------------------------------------------


def usage_probe(request_id: str | None = None) -> Any:
    """A bare Starlette request to pass to vLLM's serving layer as `raw_request`.

    vLLM stores each request's final usage (prompt and completion tokens over all
    choices) on `raw_request.state.request_metadata.final_usage_info` when the response
    is complete, streamed or not ("for FastAPI middleware"), so the replica learns the
    token counts without reading the stream or asking the client for `include_usage`.
    Its only header is `X-Request-Id` (when given), which vLLM uses to name the
    request's engine requests, so they can be traced back to the lorafleet request
    (deployments.engine.usage_meter); otherwise vLLM behaves as with `raw_request=None`.
    """
    from starlette.requests import Request

    headers = [(b"x-request-id", request_id.encode())] if request_id else []
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""})


def record_usage(replica_id: str, adapter: str | None, probe: Any) -> None:
    """Count a completed request's tokens (nothing if vLLM reported no usage)."""
    usage = getattr(getattr(probe.state, "request_metadata", None), "final_usage_info", None)
    if usage is None:
        return
    tags = {"model": _model, "adapter": _labels.label(adapter), "replica": replica_id}
    if usage.prompt_tokens:
        metric(PROMPT_TOKENS).inc(usage.prompt_tokens, tags)
    if usage.completion_tokens:
        metric(GENERATION_TOKENS).inc(usage.completion_tokens, tags)


def observe_finished_requests(replica_id: str, finished: Iterable[Any]) -> None:
    """vLLM's FinishedRequestStats of one engine step: time per output token of each
    request that generated more than one token."""
    tags = {"model": _model, "replica": replica_id}
    for request in finished:
        if request.num_generation_tokens > 1:
            metric(TIME_PER_OUTPUT_TOKEN).observe(request.mean_time_per_output_token, tags)


def record_adapter_load_failure(replica_id: str, reason: str) -> None:
    metric(ADAPTER_LOAD_FAILURES).inc(1, {"model": _model, "replica": replica_id, "reason": reason})


def observe_adapter_load(replica_id: str, seconds: float) -> None:
    metric(ADAPTER_LOAD_DURATION).observe(seconds, {"model": _model, "replica": replica_id})


class ObservedResidency(ResidencyTracker):
    """The replica's residency mirror, counting adapter loads and evictions per tier.

    Only steps that change which adapters are resident pay for it: a scheduler step
    whose adapters all sit in GPU slots already (the common case) changes nothing and
    is checked in O(adapters in the step). A changing step diffs the two tiers' sets,
    O(max_cpu_loras). `cpu` loads are the tracker's own `loads` (reads from the store),
    so they add up to the replica's reported `adapter_loads`.
    """

    def __init__(self, gpu_slots: int, cpu_slots: int, replica_id: str) -> None:
        super().__init__(gpu_slots, cpu_slots)
        self.replica_id = replica_id

    def loaded(self, name: str) -> None:
        before = self._snapshot()
        super().loaded(name)
        self._record_changes(before)

    def ran(self, names: Iterable[str]) -> None:
        if not isinstance(names, Collection):
            names = tuple(names)
        gpu = self.gpu
        if all(name in gpu for name in names):
            super().ran(names)
            return
        before = self._snapshot()
        super().ran(names)
        self._record_changes(before)

    def forget(self, name: str) -> None:
        before = self._snapshot()
        super().forget(name)
        self._record_changes(before)

    def _snapshot(self) -> tuple[set[str], set[str], int]:
        return set(self.gpu.items()), set(self.cpu.items()), self.loads

    def _record_changes(self, before: tuple[set[str], set[str], int]) -> None:
        gpu_before, cpu_before, loads_before = before
        gpu_after, cpu_after = set(self.gpu.items()), set(self.cpu.items())
        events = (
            (ADAPTER_LOADS, Tier.GPU, len(gpu_after - gpu_before)),
            (ADAPTER_LOADS, Tier.CPU, self.loads - loads_before),
            (ADAPTER_EVICTIONS, Tier.GPU, len(gpu_before - gpu_after)),
            (ADAPTER_EVICTIONS, Tier.CPU, len(cpu_before - cpu_after)),
        )
        for spec, tier, count in events:
            if count > 0:
                metric(spec).inc(count, {"model": _model, "replica": self.replica_id, "tier": tier.value})


def publish_replica_stats(stats: ReplicaStats) -> None:
    """Set the replica's gauges from its stats (once per stats period)."""
    replica = {"model": stats.base or _model, "replica": stats.replica_id}
    resident = metric(RESIDENT_ADAPTERS)
    for tier, names in ((Tier.GPU, stats.gpu_resident), (Tier.CPU, stats.cpu_resident), (Tier.LOADING, stats.loading)):
        resident.set(len(names), {**replica, "tier": tier.value})
    slots = metric(ADAPTER_SLOTS)
    slots.set(stats.gpu_slots, {**replica, "tier": Tier.GPU.value})
    slots.set(stats.cpu_slots, {**replica, "tier": Tier.CPU.value})
    metric(QUEUED_REQUESTS).set(stats.queue_len, replica)
    metric(RUNNING_REQUESTS).set(stats.running, replica)
    metric(KV_CACHE_USAGE).set(stats.kv_cache_usage, replica)


@dataclass(frozen=True)
class GpuSample:
    gpu: str
    utilization: float  # 0-1
    memory_used_bytes: int
    memory_total_bytes: int


class GpuMonitor:
    """Utilisation and memory of the GPUs Ray assigned to one replica, read with NVML
    (`nvidia-ml-py`, the `gpu` extra).

    `for_replica` returns None where there is no GPU, no NVML library or no driver: the
    GPU metrics are then absent, never reported as zeros for a GPU that does not exist.
    Ray's GPU ids are indices (or UUIDs) of the node's devices, which NVML also uses when
    the process sees whole devices (a Kubernetes pod, a GPU node), so `gpu` is the device
    index Ray reports.
    """

    def __init__(self, replica_id: str, handles: dict[str, Any], nvml: Any) -> None:
        self.replica_id = replica_id
        self._handles = handles
        self._nvml = nvml

    @classmethod
    def for_replica(cls, replica_id: str, gpu_ids: Iterable[object] | None = None, nvml: Any = None) -> GpuMonitor | None:
        if gpu_ids is None:
            import ray

            gpu_ids = ray.get_gpu_ids()
        ids = [str(g) for g in gpu_ids]
        if not ids:
            return None
        try:
            if nvml is None:
                import pynvml as nvml  # nvidia-ml-py
            nvml.nvmlInit()
            handles = {
                gpu: nvml.nvmlDeviceGetHandleByIndex(int(gpu)) if gpu.isdigit() else nvml.nvmlDeviceGetHandleByUUID(gpu)
                for gpu in ids
            }
        except Exception as err:  # noqa: BLE001 - no library, no driver, unknown device: no GPU metrics
            logger.warning("GPU metrics off for replica %s (GPUs %s): %s", replica_id, ids, err)
            return None
        return cls(replica_id, handles, nvml)

    def sample(self) -> list[GpuSample]:
        """Blocking NVML reads (run it in a thread)."""
        out = []
        for gpu, handle in self._handles.items():
            util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            out.append(GpuSample(gpu, util.gpu / 100.0, int(memory.used), int(memory.total)))
        return out

    async def publish(self) -> None:
        try:
            samples = await asyncio.to_thread(self.sample)
        except Exception as err:  # noqa: BLE001 - a failed read skips one period
            logger.warning("GPU metrics read failed on replica %s: %s", self.replica_id, err)
            return
        for s in samples:
            tags = {"model": _model, "replica": self.replica_id, "gpu": s.gpu}
            metric(GPU_UTILIZATION).set(s.utilization, tags)
            metric(GPU_MEMORY_USED).set(s.memory_used_bytes, tags)
            metric(GPU_MEMORY_TOTAL).set(s.memory_total_bytes, tags)


# ---- router ----------------------------------------------------------------------------

NO_REPLICA = "none"


class DecisionRecorder:
    """Routing decisions by the chosen replica's residency tier, and their duration.

    The router calls `record` once per decision. The histogram is observed at once (one
    Ray call, ~2 us); the decision counter is only a local dict increment, flushed to Ray
    `flush_s` after the first unflushed decision by a callback on the running event loop,
    so a decision does not pay for a second Ray call.
    """

    def __init__(self, policy: str, flush_s: float = 1.0, model: str = "") -> None:
        self.policy = policy
        self.model = model
        self.flush_s = flush_s
        self._tags = {"model": model, "policy": policy}
        self._pending: dict[str, int] = {}
        self._flush_scheduled = False
        self._duration = None

    def record(self, tier: str, seconds: float) -> None:
        self._pending[tier] = self._pending.get(tier, 0) + 1
        if self._duration is None:
            self._duration = metric(ROUTER_DECISION_DURATION)
        self._duration.observe(seconds, self._tags)
        if not self._flush_scheduled:
            try:
                asyncio.get_running_loop().call_later(self.flush_s, self.flush)
                self._flush_scheduled = True
            except RuntimeError:  # no event loop (tests, tools): record at once
                self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        self._flush_scheduled = False
        counter = metric(ROUTER_DECISIONS)
        for tier, count in pending.items():
            counter.inc(count, {**self._tags, "tier": tier})


# ---- controller ------------------------------------------------------------------------


class LiveReplicasGauge:
    """Sets `lorafleet_controller_live_replicas` per base every `period_s` from `live()`
    (the controller's live replicas' stats), on a task started by the first
    `ensure_running` call from the controller's event loop: it keeps counting down to 0
    when replicas stop reporting, which a value set only on reports would not. Every
    base in `bases` gets a value, 0 included."""

    def __init__(self, live: Callable[[], Sized], period_s: float, bases: Iterable[str] = ()) -> None:
        self._live = live
        self.period_s = period_s
        self.bases = list(bases)
        self._task: asyncio.Task | None = None

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def publish(self) -> None:
        counts = dict.fromkeys(self.bases, 0)
        for stats in self._live():
            base = getattr(stats, "base", "")
            counts[base] = counts.get(base, 0) + 1
        gauge = metric(LIVE_REPLICAS)
        for base, count in counts.items():
            gauge.set(count, {"model": base})

    async def _run(self) -> None:
        while True:
            try:
                self.publish()
            except Exception as err:  # noqa: BLE001 - metrics must never stop the controller
                logger.warning("live replicas gauge: %s", err)
            await asyncio.sleep(self.period_s)


def _action_keys(actions: Iterable[Any]) -> list[tuple[str, str]]:
    from cluster.placement.planner import Load

    return [("load" if isinstance(a, Load) else "unload", Tier(a.tier).value) for a in actions]


def record_autoscaling(target: int, need: float | None, model: str = "") -> None:
    """Hook for the fleet controller, after each autoscaling decision for base `model`."""
    metric(AUTOSCALING_TARGET).set(target, {"model": model})
    if need is not None:
        metric(AUTOSCALING_NEED).set(need, {"model": model})


def record_placement_pass(duration_s: float, outstanding: Iterable[Any], model: str = "") -> None:
    """Hook for the placement controller, after each planning pass of base `model`: its
    wall time (`PlacementLoop.last_plan_s`) and the actions its diff lists
    (`last_actions`), i.e. the drift between the desired and the observed placement,
    per action and tier."""
    metric(PLANNING_DURATION).observe(duration_s, {"model": model})
    counts = dict.fromkeys(((a, t.value) for a in ("load", "unload") for t in (Tier.GPU, Tier.CPU)), 0)
    for key in _action_keys(outstanding):
        counts[key] = counts.get(key, 0) + 1
    drift = metric(PLACEMENT_DRIFT)
    for (action, tier), count in counts.items():
        drift.set(count, {"model": model, "action": action, "tier": tier})


def record_placement_actions(applied: Iterable[Any], model: str = "") -> None:
    """Hook for whoever carries placement actions out (Load / Unload of
    `cluster.placement.planner`): call once with the actions actually applied."""
    counter = metric(PLACEMENT_ACTIONS)
    for action, tier in _action_keys(applied):
        counter.inc(1, {"model": model, "action": action, "tier": tier})
