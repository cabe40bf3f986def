"""Micro-benchmark: the cost of one routing decision, and of rebuilding the view.

Run:  python bench/decision_time.py (or pytest with --benchmark-json=out.json)
Skips when pytest-benchmark is not installed. Rounds are fixed (pedantic mode) so the
file costs well under a second per case in a normal test run; pass
--benchmark-disable to run each case once as a plain test.

The fleet is steady state (cluster.routing.synthetic): every replica holds 4 adapters
in GPU slots and 12 more in its CPU cache, out of 1,000; requests cycle over 64
adapters, some held somewhere and some cold, so the measured mean mixes both paths.
"""

from __future__ import annotations

import itertools
from random import Random

import pytest

import pytest_benchmark  # noqa: F401 - a declared test dependency (pyproject [test])

from cluster.routing import ClusterView, InflightTracker, make_policy
from cluster.routing.synthetic import adapter_name, synthetic_fleet

N_ADAPTERS = 1000


def _setup(n_replicas: int):
    rng = Random(1234)
    fleet = synthetic_fleet(n_replicas, n_adapters=N_ADAPTERS, rng=rng)
    view = ClusterView(
        fleet,
        placement={adapter_name(i): [fleet[i % n_replicas].replica_id] for i in range(0, 64, 4)},
    )
    inflight = InflightTracker()
    for s in fleet:
        for _ in range(rng.randint(0, 6)):
            inflight.on_assign(s.replica_id, adapter_name(rng.randrange(N_ADAPTERS)))
    adapters = itertools.cycle([adapter_name(rng.randrange(N_ADAPTERS)) for _ in range(64)])
    return view, inflight, adapters


@pytest.mark.parametrize("n_replicas", [8, 64, 1024])
def test_bench_adapter_affinity_decision(benchmark, n_replicas):
    view, inflight, adapters = _setup(n_replicas)
    policy = make_policy("adapter_affinity")
    rng = Random(0)
    benchmark.extra_info.update(policy="adapter_affinity", replicas=n_replicas)

    ranked = benchmark.pedantic(
        lambda: policy.rank(next(adapters), view, inflight, rng),
        rounds=300,
        iterations=10,
        warmup_rounds=20,
    )
    assert 0 < len(ranked) <= 16


@pytest.mark.parametrize("policy_name", ["pow2", "multiplex"])
def test_bench_baseline_decision_1024(benchmark, policy_name):
    view, inflight, adapters = _setup(1024)
    policy = make_policy(policy_name)
    rng = Random(0)
    benchmark.extra_info.update(policy=policy_name, replicas=1024)
    ranked = benchmark.pedantic(
        lambda: policy.rank(next(adapters), view, inflight, rng),
        rounds=300,
        iterations=10,
        warmup_rounds=20,
    )
    assert ranked


def test_bench_lora_affinity_llmd_decision_1024(benchmark):
    """llm-d scores every replica: O(R), shown for the simulator's cost planning."""
    view, inflight, adapters = _setup(1024)
    policy = make_policy("lora_affinity_llmd")
    rng = Random(0)
    benchmark.extra_info.update(policy="lora_affinity_llmd", replicas=1024)
    ranked = benchmark.pedantic(
        lambda: policy.rank(next(adapters), view, inflight, rng),
        rounds=30,
        iterations=1,
        warmup_rounds=2,
    )
    assert len(ranked) == 1024


def test_bench_view_build_1024(benchmark):
    """Rebuilding the index once per stats period: must stay far below the period."""
    fleet = synthetic_fleet(1024, n_adapters=N_ADAPTERS, rng=Random(1234))
    benchmark.extra_info.update(policy="view_build", replicas=1024)
    view = benchmark.pedantic(lambda: ClusterView(fleet), rounds=30, iterations=1, warmup_rounds=2)
    assert len(view) == 1024


# ---- the Ray glue around the policy (deployments/serve/router.py) ------------------------


from bench.harness.router_glue import glue_decision, glue_router_and_replicas  # noqa: E402


@pytest.mark.parametrize("n_replicas", [8, 64, 1024])
def test_bench_router_glue_decision(benchmark, n_replicas):
    """The policy plus everything the Ray glue adds per request (view lookup, claims,
    routed/completed bookkeeping); the candidate list is Ray's, unchanged between stats."""
    router, replicas = glue_router_and_replicas(n_replicas)
    rng = Random(0)
    adapters = itertools.cycle([adapter_name(rng.randrange(N_ADAPTERS)) for _ in range(64)])
    ids = itertools.count()
    benchmark.extra_info.update(policy="adapter_affinity+glue", replicas=n_replicas)
    benchmark.pedantic(lambda: glue_decision(router, replicas, next(adapters), f"r{next(ids)}"),
                       rounds=300, iterations=10, warmup_rounds=20)
    assert router._inflight.total() == 0
