"""deployments/observability/metrics.py without Ray: the definitions follow Prometheus naming, and each
helper records exactly what it says, checked against an in-memory backend."""

import asyncio
import re
from collections import defaultdict
from types import SimpleNamespace

import pytest

from cluster.labels import BASE, OTHER, UNKNOWN
from cluster.stats import ReplicaStats
from deployments.observability import metrics
from deployments.config import parse_config

UNIT_SUFFIXES = ("_total", "_seconds", "_bytes", "_ratio", "_adapters", "_slots", "_requests", "_replicas", "_actions")
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


class FakeMetric:
    def __init__(self, spec):
        self.spec = spec
        self.values = defaultdict(float)
        self.observations = defaultdict(list)

    def _key(self, tags):
        tags = tags or {}
        assert set(tags) == set(self.spec.labels), f"{self.spec.name}: tags {sorted(tags)} != {self.spec.labels}"
        assert all(isinstance(v, str) for v in tags.values())
        return tuple(sorted(tags.items()))

    def inc(self, value=1.0, tags=None):
        assert self.spec.kind == "counter" and value > 0
        self.values[self._key(tags)] += value

    def set(self, value, tags=None):
        assert self.spec.kind == "gauge"
        self.values[self._key(tags)] = value

    def observe(self, value, tags=None):
        assert self.spec.kind == "histogram"
        self.observations[self._key(tags)].append(value)


class FakeBackend:
    def __init__(self):
        self.made = {}

    def create(self, spec):
        self.made[spec.name] = FakeMetric(spec)
        return self.made[spec.name]

    def value(self, spec, **tags):
        metric = self.made.get(spec.name)
        return metric.values.get(tuple(sorted(tags.items())), 0) if metric else 0

    def observed(self, spec, **tags):
        metric = self.made.get(spec.name)
        return metric.observations.get(tuple(sorted(tags.items())), []) if metric else []


def _config(top_k=50):
    return parse_config({
        "model": {"source": "/m", "served_name": "base-model"},
        "adapters": {"uri": "/a"},
        "observability": {"adapter_label_top_k": top_k},
    })


@pytest.fixture
def backend():
    fake = FakeBackend()
    metrics.use_backend(fake)
    metrics.configure(_config())
    yield fake
    metrics.use_backend(None)


# ---- definitions -------------------------------------------------------------------------


def test_every_metric_is_named_lorafleet_with_a_unit_and_snake_case_labels():
    names = [m.name for m in metrics.ALL_METRICS]
    assert len(names) == len(set(names)) >= 20
    for spec in metrics.ALL_METRICS:
        assert spec.name.startswith("lorafleet_") and SNAKE.match(spec.name), spec.name
        assert spec.name.endswith(UNIT_SUFFIXES), f"{spec.name}: no unit suffix"
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert all(SNAKE.match(label) for label in spec.labels), spec.labels
        assert "le" not in spec.labels and spec.description
        assert spec.exported_name == "ray_" + spec.name
        if spec.kind == "histogram":
            assert spec.name.endswith("_seconds")
            assert list(spec.buckets) == sorted(set(spec.buckets)) and spec.buckets[0] > 0
        else:
            assert spec.buckets == ()


def test_the_ray_backend_builds_ray_metric_objects_with_the_spec_labels():
    from ray.util.metrics import Counter, Histogram

    counter = metrics.RayBackend().create(metrics.REQUESTS)
    assert isinstance(counter, Counter) and counter.info["tag_keys"] == metrics.REQUESTS.labels
    histogram = metrics.RayBackend().create(metrics.TIME_TO_FIRST_TOKEN)
    assert isinstance(histogram, Histogram) and histogram.boundaries == list(metrics.TTFT_BUCKETS_S)


def test_outside_ray_recording_is_a_no_op():
    metrics.use_backend(None)
    try:
        assert isinstance(metrics.metric(metrics.REQUESTS), metrics._NullMetric)
        metrics.record_request("chat", BASE, 200, 0.1, 0.05)
    finally:
        metrics.use_backend(None)


# ---- ingress -----------------------------------------------------------------------------


def test_a_successful_request_counts_once_with_its_latency(backend):
    observed = metrics.RequestObservation("completions")
    observed.resolved("poet")
    observed.finish(200)
    observed.finish(500)  # a second finish is ignored
    tags = {"model": "base-model", "adapter": "poet", "endpoint": "completions"}
    assert backend.value(metrics.REQUESTS, **tags, status="200") == 1
    assert backend.value(metrics.REQUESTS, **tags, status="500") == 0
    assert len(backend.observed(metrics.REQUEST_DURATION, **tags)) == 1
    assert backend.observed(metrics.TIME_TO_FIRST_TOKEN, **tags) == []  # not a stream


def test_a_stream_records_its_time_to_first_chunk(backend):
    observed = metrics.RequestObservation("chat")
    observed.resolved(None)
    observed.first_chunk()
    observed.finish()
    tags = {"model": "base-model", "adapter": BASE, "endpoint": "chat"}
    assert backend.value(metrics.REQUESTS, **tags, status="200") == 1
    (ttft,) = backend.observed(metrics.TIME_TO_FIRST_TOKEN, **tags)
    (e2e,) = backend.observed(metrics.REQUEST_DURATION, **tags)
    assert 0 <= ttft <= e2e


def test_errors_are_counted_by_status_without_latency_and_unresolved_models_are_unknown(backend):
    observed = metrics.RequestObservation("completions")
    observed.finish(404)
    tags = {"model": "base-model", "adapter": UNKNOWN, "endpoint": "completions"}
    assert backend.value(metrics.REQUESTS, **tags, status="404") == 1
    assert backend.observed(metrics.REQUEST_DURATION, **tags) == []


def test_the_adapter_label_follows_the_configured_bound(backend):
    metrics.configure(_config(top_k=1))
    for adapter in ["a", "b", "b"]:
        observed = metrics.RequestObservation("chat")
        observed.resolved(adapter)
        observed.finish(200)
    tags = {"model": "base-model", "endpoint": "chat", "status": "200"}
    assert backend.value(metrics.REQUESTS, adapter="a", **tags) == 1
    assert backend.value(metrics.REQUESTS, adapter=OTHER, **tags) == 2
    assert metrics.adapter_labels().top_k == 1


# ---- engine replica -------------------------------------------------------------------


def _probe_with_usage(prompt, completion):
    probe = metrics.usage_probe()
    probe.state.request_metadata = SimpleNamespace(
        final_usage_info=SimpleNamespace(prompt_tokens=prompt, completion_tokens=completion)
    )
    return probe


def test_usage_is_counted_by_adapter_and_replica(backend):
    metrics.record_usage("r1", "poet", _probe_with_usage(5, 7))
    metrics.record_usage("r1", "poet", _probe_with_usage(3, 0))
    metrics.record_usage("r1", None, _probe_with_usage(2, 2))
    metrics.record_usage("r1", "poet", metrics.usage_probe())  # no usage reported: nothing
    poet = {"model": "base-model", "adapter": "poet", "replica": "r1"}
    assert backend.value(metrics.PROMPT_TOKENS, **poet) == 8
    assert backend.value(metrics.GENERATION_TOKENS, **poet) == 7
    assert backend.value(metrics.GENERATION_TOKENS, **{**poet, "adapter": BASE}) == 2


def test_the_usage_probe_looks_like_no_request_to_vllm():
    probe = metrics.usage_probe()
    assert dict(probe.headers) == {}
    probe.state.request_metadata = "set by vLLM"
    assert probe.state.request_metadata == "set by vLLM"
    # What vLLM 0.32's serving layer reads from `raw_request` (headers only) answers as for None.
    from vllm.entrypoints.generate.base.serving import GenerateBaseServing as Serving

    assert Serving._base_request_id(probe, "req-1") == Serving._base_request_id(None, "req-1") == "req-1"
    assert Serving._get_data_parallel_rank(probe) is Serving._get_data_parallel_rank(None) is None
    assert Serving._get_session_id_from_headers(probe) is Serving._get_session_id_from_headers(None) is None


def test_time_per_output_token_comes_from_requests_with_more_than_one_token(backend):
    finished = [
        SimpleNamespace(num_generation_tokens=10, mean_time_per_output_token=0.02),
        SimpleNamespace(num_generation_tokens=1, mean_time_per_output_token=0.0),
    ]
    metrics.observe_finished_requests("r1", finished)
    assert backend.observed(metrics.TIME_PER_OUTPUT_TOKEN, model="base-model", replica="r1") == [0.02]


def test_adapter_load_time_is_observed_per_replica(backend):
    metrics.observe_adapter_load("r1", 0.25)
    assert backend.observed(metrics.ADAPTER_LOAD_DURATION, model="base-model", replica="r1") == [0.25]


def _events(backend, spec):
    return {tier: backend.value(spec, model="base-model", replica="r1", tier=tier) for tier in ("gpu", "cpu")}


def test_residency_loads_and_evictions_per_tier(backend):
    tracker = metrics.ObservedResidency(gpu_slots=2, cpu_slots=3, replica_id="r1")
    for name in ["a", "b", "c"]:
        tracker.loaded(name)  # store -> host memory
    assert _events(backend, metrics.ADAPTER_LOADS) == {"gpu": 0, "cpu": 3}
    tracker.ran({"a": 1, "b": 1})  # a and b take the two GPU slots
    tracker.ran({"c": 1})  # c takes a's slot (LRU)
    assert _events(backend, metrics.ADAPTER_LOADS) == {"gpu": 3, "cpu": 3}
    assert _events(backend, metrics.ADAPTER_EVICTIONS) == {"gpu": 1, "cpu": 0}
    tracker.loaded("d")  # host memory full: a (least recently used) leaves it
    assert _events(backend, metrics.ADAPTER_EVICTIONS) == {"gpu": 1, "cpu": 1}
    tracker.ran(["a"])  # a again: read from the store again, into a slot, evicting b from the slot
    assert _events(backend, metrics.ADAPTER_LOADS) == {"gpu": 4, "cpu": 5}
    assert backend.value(metrics.ADAPTER_LOADS, model="base-model", replica="r1", tier="cpu") == tracker.loads
    assert tracker.gpu_resident() == ("c", "a")


def test_a_step_whose_adapters_are_all_in_gpu_slots_records_nothing(backend):
    tracker = metrics.ObservedResidency(gpu_slots=2, cpu_slots=2, replica_id="r1")
    tracker.ran({"a": 1})
    before = dict(backend.made[metrics.ADAPTER_LOADS.name].values)
    for _ in range(5):
        tracker.ran({"a": 3})
    assert dict(backend.made[metrics.ADAPTER_LOADS.name].values) == before
    assert metrics.ADAPTER_EVICTIONS.name not in backend.made


def test_replica_stats_become_gauges(backend):
    stats = ReplicaStats(
        replica_id="r1", gpu_slots=2, cpu_slots=4, gpu_resident=("a", "b"), cpu_resident=("c",),
        loading=(), queue_len=3, running=5, kv_cache_usage=0.25,
    )
    metrics.publish_replica_stats(stats)
    assert {t: backend.value(metrics.RESIDENT_ADAPTERS, model="base-model", replica="r1", tier=t) for t in ("gpu", "cpu", "loading")} == {
        "gpu": 2, "cpu": 1, "loading": 0}
    assert backend.value(metrics.ADAPTER_SLOTS, model="base-model", replica="r1", tier="cpu") == 4
    assert backend.value(metrics.QUEUED_REQUESTS, model="base-model", replica="r1") == 3
    assert backend.value(metrics.RUNNING_REQUESTS, model="base-model", replica="r1") == 5
    assert backend.value(metrics.KV_CACHE_USAGE, model="base-model", replica="r1") == 0.25


class FakeNvml:
    def __init__(self, fail_init=False):
        self.fail_init = fail_init

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"handle-{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return f"handle-{uuid}"

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=40 if handle == "handle-0" else 90, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=2 * 2**30, total=80 * 2**30, free=78 * 2**30)


def test_no_gpu_means_no_gpu_monitor_and_no_gpu_series(backend):
    assert metrics.GpuMonitor.for_replica("r1", gpu_ids=[], nvml=FakeNvml()) is None
    assert metrics.GpuMonitor.for_replica("r1", gpu_ids=[0], nvml=FakeNvml(fail_init=True)) is None
    assert not {m.name for m in (metrics.GPU_UTILIZATION, metrics.GPU_MEMORY_USED)} & set(backend.made)


async def test_gpu_utilisation_and_memory_per_gpu_of_the_replica(backend):
    monitor = metrics.GpuMonitor.for_replica("r1", gpu_ids=[0, "GPU-abc"], nvml=FakeNvml())
    await monitor.publish()
    assert backend.value(metrics.GPU_UTILIZATION, model="base-model", replica="r1", gpu="0") == 0.4
    assert backend.value(metrics.GPU_UTILIZATION, model="base-model", replica="r1", gpu="GPU-abc") == 0.9
    assert backend.value(metrics.GPU_MEMORY_USED, model="base-model", replica="r1", gpu="0") == 2 * 2**30
    assert backend.value(metrics.GPU_MEMORY_TOTAL, model="base-model", replica="r1", gpu="0") == 80 * 2**30


# ---- router and controller -------------------------------------------------------------


def test_decisions_without_an_event_loop_are_recorded_at_once(backend):
    recorder = metrics.DecisionRecorder("adapter_affinity", model="base-model")
    recorder.record("gpu", 3e-5)
    assert backend.value(metrics.ROUTER_DECISIONS, model="base-model", policy="adapter_affinity", tier="gpu") == 1
    assert backend.observed(metrics.ROUTER_DECISION_DURATION, model="base-model", policy="adapter_affinity") == [3e-5]


async def test_decision_counts_are_batched_and_flushed_from_the_event_loop(backend):
    recorder = metrics.DecisionRecorder("adapter_affinity", flush_s=0.05, model="base-model")
    for tier in ["gpu", "gpu", "free_slot"]:
        recorder.record(tier, 1e-5)
    assert backend.value(metrics.ROUTER_DECISIONS, model="base-model", policy="adapter_affinity", tier="gpu") == 0
    assert len(backend.observed(metrics.ROUTER_DECISION_DURATION, model="base-model", policy="adapter_affinity")) == 3
    await asyncio.sleep(0.1)
    assert backend.value(metrics.ROUTER_DECISIONS, model="base-model", policy="adapter_affinity", tier="gpu") == 2
    assert backend.value(metrics.ROUTER_DECISIONS, model="base-model", policy="adapter_affinity", tier="free_slot") == 1
    recorder.record("cpu", 1e-5)  # a new batch
    await asyncio.sleep(0.1)
    assert backend.value(metrics.ROUTER_DECISIONS, model="base-model", policy="adapter_affinity", tier="cpu") == 1


async def test_live_replicas_gauge_follows_the_live_set_on_its_own_timer(backend):
    live = [ReplicaStats(replica_id="r1", base="a"), ReplicaStats(replica_id="r2", base="a"),
            ReplicaStats(replica_id="r3", base="b")]
    gauge = metrics.LiveReplicasGauge(lambda: live, period_s=0.02, bases=["a", "b", "c"])
    gauge.ensure_running()
    gauge.ensure_running()  # idempotent
    await asyncio.sleep(0.05)
    assert [backend.value(metrics.LIVE_REPLICAS, model=m) for m in "abc"] == [2, 1, 0]
    live.clear()  # replicas stop reporting: the gauge goes to 0 without a report
    await asyncio.sleep(0.05)
    assert [backend.value(metrics.LIVE_REPLICAS, model=m) for m in "abc"] == [0, 0, 0]
    gauge._task.cancel()


def test_placement_hooks_record_duration_drift_and_applied_actions(backend):
    from cluster.placement import planner
    from cluster.stats import Tier

    outstanding = [
        planner.Load("a", "r1", Tier.GPU, Tier.CPU),
        planner.Load("b", "r1", Tier.GPU),
        planner.Unload("c", "r2", Tier.CPU),
    ]
    metrics.record_placement_pass(0.012, outstanding, model="m")
    assert backend.observed(metrics.PLANNING_DURATION, model="m") == [0.012]
    drift = {(a, t): backend.value(metrics.PLACEMENT_DRIFT, model="m", action=a, tier=t)
             for a in ("load", "unload") for t in ("gpu", "cpu")}
    assert drift == {("load", "gpu"): 2, ("load", "cpu"): 0, ("unload", "gpu"): 0, ("unload", "cpu"): 1}
    metrics.record_placement_pass(0.01, [], model="m")  # converged: every drift gauge back to 0
    assert backend.value(metrics.PLACEMENT_DRIFT, model="m", action="load", tier="gpu") == 0
    metrics.record_placement_actions(outstanding[:2], model="m")
    assert backend.value(metrics.PLACEMENT_ACTIONS, model="m", action="load", tier="gpu") == 2


def test_the_readme_lists_every_metric():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [s.exported_name for s in metrics.ALL_METRICS if f"`{s.exported_name}`" not in readme]
    assert missing == []


def test_config_has_the_metrics_port_and_the_observability_section():
    config = _config()
    assert config.server.metrics_port == 8080
    assert config.with_overrides(metrics_port=9100).server.metrics_port == 9100
    assert config.observability.adapter_label_top_k == 50 and config.observability.adapter_label_review_s == 300
    with pytest.raises(Exception, match="adapter_label_top_k"):
        parse_config({**config.model_dump(), "observability": {"adapter_label_top_k": -1}})
