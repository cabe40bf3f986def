"""The serving path's host CPU per output token in the simulator's cost model: where
it shares the engine's cores, every step pays it once per sequence in the batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cluster.sim.cost import CostModel
from cluster.sim.simulator import SimConfig, Simulator, simulate
from cluster.sim.workload import Request, WorkloadSpec, generate
from tests.sim_toys import TOY, TOY_ADAPTER_NAMES as NAMES, TOY_WORKLOAD as WORKLOAD

REPO = Path(__file__).resolve().parents[2]



# ---- the cost model's host term ----------------------------------------------------------


def test_a_step_carries_the_host_cpu_of_every_sequence_in_it():
    host = dataclasses.replace(TOY, host_per_token_s=0.002)
    for batch in (1, 4):
        assert host.step_s(batch, 1) - TOY.step_s(batch, 1) == pytest.approx(0.002 * batch)


def test_the_host_term_defaults_to_zero_and_the_offline_cost_file_still_loads_without_it():
    assert CostModel.gpu_like().host_per_token_s == 0.0
    offline = CostModel.from_json(REPO / "bench" / "results" / "cost-model-cpu.json")
    assert offline.host_per_token_s == 0.0
    assert CostModel.from_dict({"host_per_token_s": 0.004}, base=offline).host_per_token_s == 0.004
    with pytest.raises(ValueError, match=">= 0"):
        CostModel(host_per_token_s=-0.001)


def test_a_simulated_replica_pays_the_host_cpu_in_its_steps_before_the_first_token():
    # one base-model request alone: first token = prefill + one step of batch 1
    trace = [Request(0.0, None, 10, 3)]
    for host in (0.0, 0.004):
        cost = dataclasses.replace(TOY, host_per_token_s=host)
        sim = Simulator(SimConfig(cost=cost, replicas=1), WorkloadSpec(adapters=1), "pow2", trace=trace)
        done = {}
        complete = sim.complete
        sim.complete = lambda req, now: (done.__setitem__(req.id, req), complete(req, now))
        sim.run()
        assert done[0].first_token == pytest.approx(0.010 + 0.015 + host)
        assert done[0].finish == pytest.approx(0.010 + 3 * (0.015 + host))


def test_the_simulated_fleet_serves_less_and_answers_later_when_the_host_cost_is_added():
    cost = CostModel.from_json(REPO / "bench" / "results" / "cost-model-cpu.json")
    trace = []
    for r in generate(WORKLOAD, names=NAMES):  # 30 s of Poisson arrivals at 5 req/s
        if r.arrival_s >= 30:
            break
        trace.append(r)
    config = SimConfig(replicas=2, cost=dataclasses.replace(cost, gpu_slots=2, cpu_slots=4))
    offline = simulate(config, WORKLOAD, "adapter_affinity+controller", trace=trace)
    served = simulate(
        dataclasses.replace(config, cost=dataclasses.replace(config.cost, host_per_token_s=0.012)),
        WORKLOAD, "adapter_affinity+controller", trace=trace,
    )
    # 5 req/s x 32 tokens = 160 tok/s offered: the engine alone serves it all; with 12 ms
    # of host CPU per token two cores serve at most ~2 / 0.0127 = 157 tok/s
    assert offline.output_tps > 150
    assert served.output_tps < 0.95 * offline.output_tps
    assert served.ttft_p50_s > 10 * offline.ttft_p50_s


def test_the_sims_autoscaler_profile_counts_the_host_cost_per_sequence():
    from cluster.autoscaling import AutoscalingSettings
    from cluster.placement import PlacementSettings

    cost = dataclasses.replace(TOY, host_per_token_s=0.003)
    config = SimConfig(cost=cost, replicas=1, autoscaling=AutoscalingSettings(), placement=PlacementSettings())
    sim = Simulator(config, WorkloadSpec(adapters=1), "adapter_affinity+controller+autoscale", trace=[])
    assert sim.scaler.profile.step_s(4, 0, 0) == pytest.approx(cost.step_s(4, 0))
