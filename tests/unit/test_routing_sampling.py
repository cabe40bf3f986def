"""k-sampling: a decision at 1,024 replicas considers O(k) of them, holders always."""

from __future__ import annotations

from random import Random

import pytest

from cluster.routing import (
    AffinitySampler,
    ClusterView,
    InflightTracker,
    RoutingSettings,
    make_policy,
)
from cluster.stats import ReplicaStats

N = 1024
K = 16
CAP = 8


def big_fleet(
    gpu: range = range(0),
    cpu: range = range(0),
    loading: range = range(0),
    unhealthy: range = range(0),
    adapter: str = "hot",
) -> list[ReplicaStats]:
    out = []
    for i in range(N):
        rid = f"r{i:04d}"
        out.append(
            ReplicaStats(
                rid,
                gpu_slots=4,
                gpu_resident=(adapter,) if i in gpu else (f"x{i}",),
                cpu_resident=(adapter,) if i in cpu else (),
                loading=(adapter,) if i in loading else (),
                healthy=i not in unhealthy,
            )
        )
    return out


def rid(i: int) -> str:
    return f"r{i:04d}"


def test_small_fleet_considers_every_routable_replica():
    view = ClusterView([ReplicaStats(f"r{i}", healthy=i != 3) for i in range(K)])
    assert list(AffinitySampler(K, CAP).sample("a", view, Random(0))) == [
        f"r{i}" for i in range(K) if i != 3
    ]


def test_all_holders_included_when_within_cap():
    view = ClusterView(
        big_fleet(gpu=range(10, 13), cpu=range(500, 502), loading=range(900, 901)),
        placement={"hot": [rid(700), rid(10)]},
    )
    preferred = {rid(i) for i in (10, 11, 12, 500, 501, 900, 700)}
    for seed in range(20):
        got = AffinitySampler(K, CAP).sample("hot", view, Random(seed))
        assert len(got) == K
        assert len(set(got)) == K
        assert preferred <= set(got)


def test_many_holders_capped_best_tier_first():
    view = ClusterView(big_fleet(gpu=range(0, 30), cpu=range(100, 130)))
    gpu_holders = {rid(i) for i in range(30)}
    for seed in range(20):
        got = AffinitySampler(K, CAP).sample("hot", view, Random(seed))
        assert len(got) <= K + CAP
        assert len(got) == K
        assert set(got[:CAP]) <= gpu_holders  # the capped part is all GPU holders
        assert len(set(got)) == len(got)


def test_capped_holders_rotate_across_decisions():
    view = ClusterView(big_fleet(gpu=range(0, 30)))
    seen: set[str] = set()
    rng = Random(3)
    for _ in range(50):
        seen.update(AffinitySampler(K, CAP).sample("hot", view, rng)[:CAP])
    assert len(seen) == 30  # every holder gets its turn, not the first 8 in list order


def test_random_part_always_leaves_room_for_non_holders():
    view = ClusterView(big_fleet(gpu=range(0, 200)))
    holders = {rid(i) for i in range(200)}
    got = AffinitySampler(K, CAP).sample("hot", view, Random(0))
    non_holders = [r for r in got if r not in holders]
    # the random half is drawn from all 1,024: most of it misses the 200 holders
    assert len(non_holders) >= 3


def test_unhealthy_holders_and_hinted_replicas_are_not_sampled():
    view = ClusterView(
        big_fleet(gpu=range(0, 4), unhealthy=range(0, 2)),
        placement={"hot": [rid(1)]},
    )
    for seed in range(20):
        got = set(AffinitySampler(K, CAP).sample("hot", view, Random(seed)))
        assert rid(0) not in got and rid(1) not in got
        assert {rid(2), rid(3)} <= got


def test_base_model_request_is_a_plain_random_sample():
    view = ClusterView(big_fleet(gpu=range(0, 4)))
    got = AffinitySampler(K, CAP).sample(None, view, Random(0))
    assert len(got) == K and len(set(got)) == K


def test_same_seed_same_sample_different_seed_differs():
    view = ClusterView(big_fleet(gpu=range(0, 4)))
    a = AffinitySampler(K, CAP).sample("hot", view, Random(5))
    assert AffinitySampler(K, CAP).sample("hot", view, Random(5)) == a
    assert AffinitySampler(K, CAP).sample("hot", view, Random(6)) != a


@pytest.mark.parametrize("adapter", ["hot", "cold", None])
def test_policy_decision_at_1024_replicas_is_bounded_by_k(adapter):
    # a huge spread threshold so the filter keeps every sampled candidate
    settings = RoutingSettings(sample_k=K, holders_cap=CAP, spread_threshold=10**6)
    policy = make_policy("adapter_affinity", settings)
    view = ClusterView(big_fleet(gpu=range(0, 30), cpu=range(40, 60)))
    decided = policy.decide(adapter, view, InflightTracker(), Random(0))
    assert 0 < len(decided) <= K + CAP
    if adapter == "hot":
        assert decided[0].candidate.residency.value == "gpu"


def test_policy_touches_only_sampled_replicas():
    class CountingView(ClusterView):
        resolved = 0

        def candidates(self, replica_ids, adapter, inflight):
            resolved = super().candidates(replica_ids, adapter, inflight)
            CountingView.resolved += len(resolved)
            return resolved

    view = CountingView(big_fleet(gpu=range(0, 30)))
    assert make_policy("adapter_affinity").rank("hot", view, InflightTracker(), Random(0))
    assert 0 < CountingView.resolved <= K
