"""Baselines behave as the systems they stand for: pow2 is adapter-blind, multiplex pins
a hot adapter to its holder, llm-d follows its tiers, random is random."""

from __future__ import annotations

from collections import Counter
from random import Random

import pytest

from cluster.routing import ClusterView, InflightTracker, make_policy
from cluster.stats import ReplicaStats


def full(rid: str, *resident: str, **kw) -> ReplicaStats:
    return ReplicaStats(rid, gpu_slots=2, gpu_resident=resident or (f"{rid}-x", f"{rid}-y"), **kw)


def hot_fleet(n: int = 8) -> ClusterView:
    return ClusterView([full("holder", "hot", "b")] + [full(f"r{i}") for i in range(n - 1)])


def serve_sequentially(
    policy_name: str, view: ClusterView, n: int, adapter: str = "hot"
) -> Counter:
    """`n` requests for `adapter`, none finishing; count who takes each (first choice)."""
    policy = make_policy(policy_name)
    inflight = InflightTracker()
    rng = Random(11)
    served = Counter()
    for _ in range(n):
        chosen = policy.rank(adapter, view, inflight, rng)[0]
        inflight.on_assign(chosen)
        served[chosen] += 1
    return served


# ---- pow2 -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_pow2_ignores_adapters(seed):
    view = ClusterView(
        [full("holder", "hot", "b")] + [ReplicaStats(f"r{i}", running=i % 3) for i in range(9)]
    )
    policy = make_policy("pow2")
    rankings = {
        adapter: policy.rank(adapter, view, InflightTracker(), Random(seed))
        for adapter in ("hot", "absent", None)
    }
    assert rankings["hot"] == rankings["absent"] == rankings[None]


def test_pow2_ranks_two_sampled_replicas_lower_load_first():
    view = ClusterView([ReplicaStats("busy", running=5), ReplicaStats("calm", running=1)])
    assert make_policy("pow2").rank("a", view, InflightTracker(), Random(0)) == ["calm", "busy"]
    many = ClusterView([ReplicaStats(f"r{i}", running=i) for i in range(50)])
    for seed in range(20):
        ranked = make_policy("pow2").rank("a", many, InflightTracker(), Random(seed))
        assert len(ranked) == 2
        assert many.stats(ranked[0]).running <= many.stats(ranked[1]).running


def test_pow2_spreads_a_hot_adapter_blindly():
    served = serve_sequentially("pow2", hot_fleet(), 40)
    assert len(served) == 8
    assert served["holder"] <= 10


# ---- multiplex ------------------------------------------------------------------------


def test_multiplex_pins_a_hot_adapter_to_its_holder():
    served = serve_sequentially("multiplex", hot_fleet(), 100)
    assert served == Counter({"holder": 100})  # queue of 100 on one replica, 7 idle


def test_multiplex_balances_between_holders_by_load():
    view = ClusterView(
        [full("h0", "hot", "b"), full("h1", "hot", "c")] + [full(f"r{i}") for i in range(6)]
    )
    served = serve_sequentially("multiplex", view, 40)
    assert set(served) == {"h0", "h1"}
    assert abs(served["h0"] - served["h1"]) <= 2


def test_multiplex_cpu_cache_counts_as_loaded_loading_does_not():
    view = ClusterView(
        [
            ReplicaStats("cpu", gpu_slots=2, gpu_resident=("x", "y"), cpu_resident=("hot",)),
            ReplicaStats("loading", gpu_slots=2, gpu_resident=("x", "y"), loading=("hot",)),
            full("r0"),
        ]
    )
    for seed in range(10):
        assert (
            make_policy("multiplex").rank("hot", view, InflightTracker(), Random(seed))[0] == "cpu"
        )


def test_multiplex_without_holder_prefers_replicas_with_fewest_adapters():
    view = ClusterView([full(f"r{i}") for i in range(6)] + [ReplicaStats("empty", gpu_slots=2)])
    for seed in range(10):
        assert make_policy("multiplex").rank("cold", view, InflightTracker(), Random(seed)) == [
            "empty"
        ]


def test_multiplex_falls_back_after_the_holders():
    view = ClusterView([full("holder", "hot", "b")] + [full(f"r{i}") for i in range(5)])
    ranked = make_policy("multiplex").rank("hot", view, InflightTracker(), Random(0))
    assert ranked[0] == "holder"
    assert len(ranked) == 3 and "holder" not in ranked[1:]


# ---- llm-d ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "winner"),
    [
        pytest.param(
            [full("active", "hot", "b"), ReplicaStats("free", gpu_slots=2)],
            "active",
            id="active-over-free",
        ),
        pytest.param(
            [
                ReplicaStats("queued", gpu_slots=1, loading=("hot",)),
                ReplicaStats("free", gpu_slots=2),
            ],
            "free",
            id="free-over-queued",
        ),
        pytest.param(
            [ReplicaStats("queued", gpu_slots=1, loading=("hot",)), full("full")],
            "queued",
            id="queued-over-full",
        ),
        pytest.param(
            [full("active", "hot", "b", queue_len=10), ReplicaStats("free", gpu_slots=2)],
            "free",
            id="longest-queue-loses-affinity",  # 1.0 + 0.0 < 0.8 + 1.0
        ),
    ],
)
def test_llmd_tiers_decide_the_winner(replicas, winner):
    view = ClusterView(replicas)
    winners = {
        make_policy("lora_affinity_llmd").rank("hot", view, InflightTracker(), Random(s))[0]
        for s in range(20)
    }
    assert winners == {winner}


def test_llmd_does_not_see_router_inflight_so_pins_within_a_stats_period():
    served = serve_sequentially("lora_affinity_llmd", hot_fleet(), 30)
    assert served == Counter({"holder": 30})


# ---- random ---------------------------------------------------------------------------


def test_random_policy_samples_routable_replicas_uniformly():
    view = ClusterView([full(f"r{i}") for i in range(40)] + [full("sick", healthy=False)])
    policy = make_policy("random")
    firsts = Counter()
    for seed in range(2000):
        ranked = policy.rank("a", view, InflightTracker(), Random(seed))
        assert len(ranked) == 16 and len(set(ranked)) == 16 and "sick" not in ranked
        firsts[ranked[0]] += 1
    assert len(firsts) == 40
    assert max(firsts.values()) < 100  # ~50 each
