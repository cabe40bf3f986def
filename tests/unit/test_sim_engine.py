"""The simulator: known answers, conservation, load accounting, reproducibility."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.placement import PlacementSettings
from cluster.sim import replica as replica_module
from cluster.sim.catalog import Catalog
from cluster.sim.cost import CostModel
from cluster.sim.simulator import SimConfig, Simulator, simulate
from cluster.sim.workload import Request, WorkloadSpec
from tests.sim_toys import TOY

REPO = Path(__file__).resolve().parents[2]



def run_trace(trace, cost=TOY, policy="pow2", **config):
    """Run `trace`, returning the result and the completed requests by id."""
    sim = Simulator(SimConfig(cost=cost, **config), WorkloadSpec(adapters=1), policy, trace=trace)
    done = {}
    complete = sim.complete

    def record(req, now):
        assert req.id not in done, "completed twice"
        done[req.id] = req
        complete(req, now)

    sim.complete = record
    return sim.run(), done


# ---- known answers ---------------------------------------------------------------------


def test_one_replica_one_adapter_known_completion_times():
    trace = [
        Request(0.0, "a", 10, 3),  # cold: load 0.1 + 0.02, then prefill 0.01 + 3 steps
        Request(1.0, "a", 0, 2),  # warm: joins at once
        Request(1.005, "a", 0, 2),  # joins at the next step boundary, batch of two
    ]
    result, done = run_trace(trace, replicas=1)
    # r0: admitted 0.12; first step 0.01 prefill + 0.015 -> 0.145; two more -> 0.175
    assert done[0].first_token == pytest.approx(0.145)
    assert done[0].finish == pytest.approx(0.175)
    # r1: admitted 1.0, step 0.015 -> 1.015; r2 joins there, steps of 0.02
    assert done[1].first_token == pytest.approx(1.015)
    assert done[1].finish == pytest.approx(1.035)
    assert done[2].first_token == pytest.approx(1.035)
    assert done[2].finish == pytest.approx(1.050)  # alone again: 0.015
    assert (result.store_loads, result.gpu_loads) == (1, 1)
    assert result.completed == result.requests == 3


def test_a_full_batch_makes_requests_wait_for_a_completion():
    cost = dataclasses.replace(TOY, max_num_seqs=1, prefill_per_token_s=0.0)
    trace = [Request(0.0, None, 0, 4), Request(0.0, None, 0, 1)]  # base model: no loads
    _, done = run_trace(trace, cost=cost, replicas=1)
    assert done[0].finish == pytest.approx(4 * 0.015)
    assert done[1].first_token == pytest.approx(5 * 0.015)


@pytest.mark.parametrize(
    ("cpu_slots", "store_loads", "gpu_loads"),
    [
        pytest.param(1, 4, 4, id="host-holds-one: every switch reads the store"),
        pytest.param(2, 2, 4, id="host-holds-both: switches are host copies"),
    ],
)
def test_loads_are_counted_per_tier(cpu_slots, store_loads, gpu_loads):
    cost = dataclasses.replace(TOY, cpu_slots=cpu_slots)
    trace = [Request(float(i), "ab"[i % 2], 0, 2) for i in range(4)]  # one at a time
    result, _ = run_trace(trace, cost=cost, replicas=1)
    assert (result.store_loads, result.gpu_loads) == (store_loads, gpu_loads)
    assert result.loads_per_1k == pytest.approx(store_loads / 4 * 1000)


def test_router_queue_holds_requests_when_every_replica_is_at_its_limit():
    trace = [Request(0.0, None, 0, 2) for _ in range(5)]
    result, done = run_trace(trace, replicas=1, max_ongoing_requests=1)
    assert result.router_queued == 4
    finishes = sorted(r.finish for r in done.values())
    assert finishes == pytest.approx([0.03 * (i + 1) for i in range(5)])


def test_a_batch_never_holds_more_adapters_than_gpu_slots(monkeypatch):
    cost = dataclasses.replace(CostModel.gpu_like(), gpu_slots=2, cpu_slots=4, max_num_seqs=8)
    boundary = replica_module.SimReplica._boundary
    worst = []

    def checked(self, now):
        boundary(self, now)
        worst.append(len([a for a in self.running_per_adapter if a is not None]))

    monkeypatch.setattr(replica_module.SimReplica, "_boundary", checked)
    spec = WorkloadSpec(adapters=30, zipf_s=0.5, rate=20, requests=600, seed=3)
    simulate(SimConfig(replicas=2, cost=cost), spec, "pow2")
    assert max(worst) == 2


# ---- yardsticks --------------------------------------------------------------------------


def test_throughput_counts_the_drain_after_the_last_arrival():
    """Two requests arrive at once, one long: the span runs to the last completion,
    not to the last arrival, so a policy cannot look fast by leaving a tail."""
    cost = dataclasses.replace(TOY, max_num_seqs=1, prefill_per_token_s=0.0)
    trace = [Request(0.0, None, 0, 40), Request(0.0, None, 0, 40)]  # serial: 0.6 s + 0.6 s
    result, done = run_trace(trace, cost=cost, replicas=1)
    assert result.span_s == pytest.approx(80 * 0.015)
    assert result.drain_s == pytest.approx(80 * 0.015)
    assert result.throughput_rps == pytest.approx(2 / (80 * 0.015))


def test_replica_seconds_are_the_fleet_times_the_span_for_a_fixed_fleet():
    trace = [Request(0.5 * i, None, 0, 4) for i in range(10)]
    result, _ = run_trace(trace, replicas=3)
    assert result.replica_seconds == pytest.approx(3 * result.span_s)
    assert result.replica_seconds_per_1k_requests == pytest.approx(3 * result.span_s * 1000 / 10)
    assert (result.mean_replicas, result.peak_replicas) == (pytest.approx(3.0), 3)


def test_replica_lower_bound_is_the_work_at_a_full_batch_without_lora():
    """TOY: full batch of 4 costs 0.01 + 4 x 0.005 = 0.03 s, so 7.5 ms per token;
    prefill 1 ms per prompt token. Two requests: (10 + 5) ms + (3 + 2) x 7.5 ms."""
    trace = [Request(0.0, "a", 10, 3), Request(0.01, "a", 5, 2)]
    result, _ = run_trace(trace, replicas=1)
    work = (10 + 5) * 0.001 + (3 + 2) * 0.0075
    assert result.replica_seconds_lower_bound_per_1k == pytest.approx(work * 1000 / 2)
    assert result.replica_seconds_per_1k_requests > result.replica_seconds_lower_bound_per_1k


def test_the_in_flight_cap_defaults_to_the_batch_size():
    assert SimConfig(cost=TOY).max_ongoing_requests == TOY.max_num_seqs
    assert SimConfig(cost=TOY, max_ongoing_requests=9).max_ongoing_requests == 9


def test_a_costlier_adapter_slows_the_step():
    """A rank-64 all-module adapter (relative cost 3.8) adds 3.8 x the per-adapter
    and per-sequence LoRA time of a rank-8 q/v one."""
    cost = dataclasses.replace(TOY, step_per_adapter_s=0.002, step_per_lora_seq_s=0.001, prefill_per_token_s=0.0)
    finish = {}
    for adapter_cost in (1.0, 3.8):
        sim = Simulator(SimConfig(cost=cost, replicas=1), WorkloadSpec(adapters=1), "pow2",
                        trace=[Request(0.0, "a", 0, 10)], catalog=Catalog(costs={"a": adapter_cost}))
        sim.run()
        finish[adapter_cost] = sim._last_finish
    load = TOY.store_load_s + TOY.cpu_to_gpu_s
    for k, t in finish.items():
        assert t - load == pytest.approx(10 * (0.01 + 0.005 + 0.002 * k + 0.001 * k))


def test_an_adapter_can_have_its_own_store_read_time():
    cost = dataclasses.replace(TOY, prefill_per_token_s=0.0)
    sim = Simulator(SimConfig(cost=cost, replicas=1), WorkloadSpec(adapters=1), "pow2",
                    trace=[Request(0.0, "slow", 0, 1)], catalog=Catalog(load_s={"slow": 1.5}))
    sim.run()
    assert sim._last_finish == pytest.approx(1.5 + TOY.cpu_to_gpu_s + 0.015)


# ---- conservation and reproducibility --------------------------------------------------------

SMALL = SimConfig(replicas=4, cost=dataclasses.replace(CostModel.gpu_like(), gpu_slots=4, cpu_slots=8), warmup_s=5)
SPEC = WorkloadSpec(adapters=60, zipf_s=1.0, rate=12, requests=800, base_fraction=0.1, seed=11)


@pytest.mark.parametrize(
    "policy",
    ["random", "pow2", "multiplex", "lora_affinity_llmd", "adapter_affinity", "adapter_affinity+controller", "bound"],
)
def test_every_request_completes_exactly_once(policy):
    sim = Simulator(SMALL, SPEC, policy)
    seen = []
    complete = sim.complete
    sim.complete = lambda req, now: (seen.append(req.id), complete(req, now))
    result = sim.run()
    assert sorted(seen) == list(range(SPEC.requests))
    assert result.completed == result.requests == SPEC.requests
    assert 0 < result.measured <= SPEC.requests
    assert 0 <= result.slo_attainment <= 1
    assert result.goodput_rps <= result.throughput_rps


def _comparable(result) -> dict:
    data = result.to_dict()
    for key in ("wall_s", "plan_ms_mean", "plan_ms_max"):
        data.pop(key)
    return data


def test_same_seed_same_result_other_seed_other_result():
    a = simulate(SMALL, SPEC, "adapter_affinity+controller")
    b = simulate(SMALL, SPEC, "adapter_affinity+controller")
    assert _comparable(a) == _comparable(b)
    c = simulate(dataclasses.replace(SMALL, seed=99), SPEC, "adapter_affinity+controller")
    assert _comparable(c) != _comparable(a)


def test_result_does_not_depend_on_string_hashing():
    """Set iteration order of strings changes between processes; a result that
    depended on it would not be reproducible from the seed."""
    code = (
        "import json, dataclasses;"
        "from tests.unit.test_sim_engine import SMALL, SPEC, _comparable;"
        "from cluster.sim.simulator import simulate;"
        "print(json.dumps(_comparable(simulate(SMALL, SPEC, 'adapter_affinity+controller'))))"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1]


# ---- placement in the loop --------------------------------------------------------------


def test_controller_cuts_adapter_loads_in_a_skewed_workload():
    config = SimConfig(
        replicas=8,
        cost=dataclasses.replace(CostModel.gpu_like(), gpu_slots=4, cpu_slots=12),
        warmup_s=30,
        placement=PlacementSettings(period_s=5),
    )
    spec = WorkloadSpec(adapters=100, zipf_s=1.2, rate=8, requests=1440, seed=2)
    pow2 = simulate(config, spec, "pow2")
    controlled = simulate(config, spec, "adapter_affinity+controller")
    assert controlled.plans > 0
    assert controlled.loads_per_1k < pow2.loads_per_1k / 2  # ~120 vs ~440 per 1,000


def test_bound_serves_every_request_as_the_base_model_and_reads_nothing():
    config = SimConfig(replicas=4, cost=dataclasses.replace(CostModel.gpu_like(), gpu_slots=2, cpu_slots=4))
    spec = WorkloadSpec(adapters=60, zipf_s=0.8, rate=20, requests=1500, seed=4)
    bound = simulate(config, spec, "bound")
    routed = simulate(config, spec, "adapter_affinity")
    assert (bound.store_loads, bound.gpu_loads) == (0, 0)
    assert routed.store_loads > 0
    assert bound.goodput_rps >= routed.goodput_rps


def test_a_replica_runs_under_any_host_not_only_the_simulator():
    """SimReplica talks to its host through the five-call ReplicaHost protocol (no
    back-pointer to the Simulator): a tiny host that keeps its own event list drives it."""
    import heapq

    class Host:
        def __init__(self):
            self.events, self.done, self.loads = [], [], []

        def schedule_step(self, at, replica):
            heapq.heappush(self.events, (at, len(self.events), "step", replica.epoch))

        def schedule_load_done(self, at, replica):
            heapq.heappush(self.events, (at, len(self.events), "load", 0))

        def count_load(self, now, *, store, planned):
            self.loads.append((now, store, planned))

        def count_busy(self, start, end):
            pass

        def complete(self, req, now):
            self.done.append((req.id, now))

    host = Host()
    rep = replica_module.SimReplica("r", TOY, host)
    rep.enqueue(replica_module.SimRequest(0, 0.0, "a", 10, 3), 0.0)
    while host.events:
        at, _, kind, epoch = heapq.heappop(host.events)
        rep.step_done(at, epoch) if kind == "step" else rep.load_done(at)
    assert host.done == [(0, pytest.approx(0.175))]  # as in the first known-answer test
    assert [store for _, store, _ in host.loads] == [True, False]


def test_trace_bounds_by_hand():
    """TOY: 7.5 ms per token at a full batch, 1 ms per prompt token. Three adapters
    exist; two get requests in the first minute after warm-up, one of them needs two
    replicas' worth in that minute."""
    from cluster.sim.bounds import trace_bounds

    trace = [Request(0.5, "a", 0, 1)]  # before warm-up: not measured
    trace += [Request(1.0 + i * 0.001, "hot", 0, 1000) for i in range(10)]  # 10 x 7.5 s = 75 s of work
    trace += [Request(61.0, "cold", 10, 1)]  # 17.5 ms
    b = trace_bounds(trace, TOY, warmup_s=1.0, adapters=3, bucket_s=60.0)
    work = 10 * 7.5 + 0.01 + 0.0075
    assert b["bound"]["replica_seconds_per_1k_requests"] == pytest.approx(work * 1000 / 11)
    assert b["bound"]["goodput_rps"] == pytest.approx(11 / 60.0)
    # 3 deployments x 60 s, plus one more replica for "hot" in its minute (75 s of work)
    per = b["per_adapter_deployments"]
    assert per["replica_seconds_per_1k_requests"] == pytest.approx((3 * 60 + 60) * 1000 / 11)
    assert per["deployments"] == 3
