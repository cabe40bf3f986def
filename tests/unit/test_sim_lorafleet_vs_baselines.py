"""lorafleet against Ray Serve LLM's default in the simulator, on a small scenario where
the fleet's size must follow the adapters, not the queue.

150 adapters whose store reads take 0.5-2 s (longer than the 1 s TTFT SLO, so a
request that finds its adapter cold misses it), 4 LoRA slots and 12 adapters of host
memory per replica, 12 requests/s, a flash crowd (the coldest adapter takes 30% of
traffic) half-way, a 4-replica start. lorafleet = adapter_affinity routing + the
placement controller + lorafleet's autoscaler; the baseline = Ray Serve's multiplex
routing + Ray Serve's default autoscaler (cluster/sim/ray_autoscaler.py), at the best
of three targets.

The negative controls make the test discriminate: with the autoscaler replaced by a
no-op, or the adapter-aware router replaced by Ray's adapter-blind default (pow2), the
same thresholds fail. (The placement controller's plan is not what this scenario
tests: with it planning nothing, 99.4% on the same replicas; its effect at scale is
the `lorafleet_without_placement` row of bench/results/autoscale-*.json.)
"""

from __future__ import annotations

import dataclasses

import pytest

from cluster.autoscaling import AutoscalingSettings
from cluster.sim.catalog import AdapterClass, CatalogSpec
from cluster.sim.cost import CostModel
from cluster.sim.ray_autoscaler import RayAutoscalingConfig
from cluster.sim.simulator import SimConfig, SimResult, Simulator
from cluster.sim.workload import Burst, WorkloadSpec, adapter_names

COST = dataclasses.replace(CostModel.gpu_like(), gpu_slots=4, cpu_slots=12)
SPEC = WorkloadSpec(adapters=150, zipf_s=1.0, rate=12, requests=7200, seed=5, burst=Burst(at_s=300, share=0.3))
CATALOG = CatalogSpec((AdapterClass(1.0, 16, 4, (0.5, 2.0)),), seed=5).build(adapter_names(150))
CONFIG = SimConfig(
    replicas=4, cost=COST, startup_s=20, warmup_s=120,
    autoscaling=AutoscalingSettings(max_replicas=60, startup_s=20),
    ray_autoscaling=RayAutoscalingConfig(max_replicas=60),
)
SLO_TARGET = 0.99


def run(policy: str, no_op_autoscaler: bool = False) -> SimResult:
    sim = Simulator(CONFIG, SPEC, policy, catalog=CATALOG)
    if no_op_autoscaler:
        sim.scaler.decide = lambda s, now: (len(s.active()) + len(s.starting), ())  # type: ignore[union-attr]
    return sim.run()


@pytest.fixture(scope="module")
def ray_best() -> SimResult:
    """Ray's default at its best target: the fewest replica-seconds among targets
    meeting the SLO target, else the highest attainment (as the benchmark picks)."""
    runs = [run(f"multiplex+ray_autoscale:{t}") for t in (2, 4, 8)]
    meeting = [r for r in runs if r.slo_attainment >= SLO_TARGET]
    if meeting:
        return min(meeting, key=lambda r: r.replica_seconds_per_1k_requests)
    return max(runs, key=lambda r: r.slo_attainment)


def test_lorafleet_meets_the_slo_on_far_fewer_replicas_than_ray_serve_llms_default(ray_best):
    ours = run("lorafleet")
    assert ours.slo_attainment >= SLO_TARGET  # measured 99.7%
    assert ray_best.slo_attainment < SLO_TARGET  # measured 97.4-98.1% over the targets
    # measured: 2,276 against 4,126 replica-seconds per 1,000 requests (0.55)
    assert ours.replica_seconds_per_1k_requests <= 0.7 * ray_best.replica_seconds_per_1k_requests


@pytest.mark.parametrize(
    ("policy", "no_op_autoscaler"),
    [
        pytest.param("lorafleet", True, id="autoscaler replaced by a no-op: stuck at 4 replicas"),
        pytest.param("pow2+controller+autoscale", False, id="router replaced by Ray's adapter-blind pow2"),
    ],
)
def test_the_same_thresholds_fail_without_the_autoscaler_or_the_adapter_aware_router(policy, no_op_autoscaler):
    crippled = run(policy, no_op_autoscaler)
    assert crippled.slo_attainment < SLO_TARGET  # measured 0% and 42%
