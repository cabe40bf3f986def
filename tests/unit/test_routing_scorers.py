"""Each scorer's tiers and curves, table-driven."""

from __future__ import annotations

import itertools
from random import Random

import pytest

from cluster.routing import (
    ChainPolicy,
    ClusterView,
    HealthyFilter,
    InflightTracker,
    KVCacheScorer,
    LlmdLoraAffinityScorer,
    LlmdQueueScorer,
    HomeScorer,
    LoadScorer,
    MaxScorePicker,
    PlacementScorer,
    Residency,
    ResidencyScorer,
    RoutingSettings,
    SlotScorer,
    make_policy,
    replica_load,
)
from cluster.routing.candidates import Candidate
from cluster.routing.sampling import AllRoutable
from cluster.stats import ReplicaStats

DEFAULT_TIERS = RoutingSettings().tier_scores()


def candidate_for(stats: ReplicaStats | None, adapter: str | None, *, rid: str = "r0", **view_kw):
    view = ClusterView([stats] if stats else [], no_stats=[] if stats else [rid], **view_kw)
    return view.candidate(stats.replica_id if stats else rid, adapter, InflightTracker())


@pytest.mark.parametrize(
    ("stats", "adapter", "residency", "score"),
    [
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("a",)), "a", Residency.GPU, 1.0, id="gpu"
        ),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, cpu_resident=("a",)), "a", Residency.CPU, 0.7, id="cpu"
        ),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, loading=("a",)),
            "a",
            Residency.LOADING,
            0.65,
            id="loading",
        ),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("b",)),
            "a",
            Residency.FREE_SLOT,
            0.6,
            id="free-slot",
        ),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("b", "c")),
            "a",
            Residency.NEEDS_EVICTION,
            0.3,
            id="needs-eviction",
        ),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("b",), loading=("c",)),
            "a",
            Residency.NEEDS_EVICTION,
            0.3,
            id="loading-adapter-takes-a-slot",
        ),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("a",), cpu_resident=("a",)),
            "a",
            Residency.GPU,
            1.0,
            id="listed-twice-best-tier-wins",
        ),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, cpu_resident=("a",), healthy=False),
            "a",
            Residency.CPU,
            0.7,
            id="unhealthy-still-resolved",
        ),
        pytest.param(None, "a", Residency.UNKNOWN, 0.2, id="no-stats"),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("b", "c")),
            None,
            Residency.BASE,
            1.0,
            id="base-none",
        ),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("a",)),
            "",
            Residency.BASE,
            1.0,
            id="base-empty",
        ),
        pytest.param(None, None, Residency.BASE, 1.0, id="base-no-stats"),
    ],
)
def test_residency_tier_and_score(stats, adapter, residency, score):
    cand = candidate_for(stats, adapter)
    assert cand.residency is residency
    assert ResidencyScorer(DEFAULT_TIERS).score([cand]) == [pytest.approx(score)]


def test_default_tiers_are_strictly_ordered_best_first():
    order = [
        Residency.GPU,
        Residency.CPU,
        Residency.LOADING,
        Residency.FREE_SLOT,
        Residency.NEEDS_EVICTION,
        Residency.UNKNOWN,
    ]
    values = [DEFAULT_TIERS[r] for r in order]
    assert values == sorted(values, reverse=True)
    assert len(set(values)) == len(values)


def test_residency_scorer_uses_the_configured_table():
    settings = RoutingSettings(tier_cpu=0.95)
    cand = candidate_for(ReplicaStats("r0", gpu_slots=1, cpu_resident=("a",)), "a")
    assert ResidencyScorer(settings.tier_scores()).score([cand]) == [0.95]


@pytest.mark.parametrize(
    ("running", "queue", "inflight", "expected"),
    [
        (3, 2, 0, 5),  # reported numbers win when the router sent nothing
        (3, 2, 9, 9),  # stats lag: the router's own count is larger
        (3, 2, 5, 5),  # equal: not added (the router's requests are in the report)
        (0, 0, 0, 0),
    ],
)
def test_replica_load_is_max_of_inflight_and_reported(running, queue, inflight, expected):
    stats = ReplicaStats("r0", running=running, queue_len=queue)
    assert replica_load(stats, inflight) == expected


def test_replica_load_without_stats_is_inflight():
    assert replica_load(None, 3) == 3


def test_candidate_load_uses_the_tracker():
    view = ClusterView([ReplicaStats("r0", running=1)])
    inflight = InflightTracker()
    for _ in range(4):
        inflight.on_assign("r0")
    assert view.candidate("r0", "a", inflight).load == 4


def _loaded(*loads: int) -> list[Candidate]:
    return [Candidate(f"r{i}", None, load, Residency.BASE) for i, load in enumerate(loads)]


@pytest.mark.parametrize(
    ("loads", "scale", "expected"),
    [
        ((0, 4, 12), 4.0, [1.0, 0.5, 0.25]),
        ((5, 5), 4.0, [1.0, 1.0]),  # equal loads: all best
        ((10, 11), 8.0, [1.0, 8 / 9]),  # one request of difference costs little
        ((3,), 8.0, [1.0]),
    ],
)
def test_load_scorer_relative_to_least_loaded(loads, scale, expected):
    assert LoadScorer(scale).score(_loaded(*loads)) == pytest.approx(expected)


def test_load_scorer_is_strictly_decreasing_in_load():
    scores = LoadScorer(8.0).score(_loaded(*range(30)))
    assert all(a > b for a, b in itertools.pairwise(scores))


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (0.0, 1.0),
        (0.45, 0.75),
        (0.9, 0.5),  # the knee
        (0.95, 0.25),  # above the knee: falls 9x faster
        (1.0, 0.0),
        (1.3, 0.0),  # bad report: clamped
        (-0.1, 1.0),
    ],
)
def test_kv_scorer_knee(usage, expected):
    cand = candidate_for(ReplicaStats("r0", kv_cache_usage=usage), "a")
    assert KVCacheScorer(0.9).score([cand]) == [pytest.approx(expected)]


def test_kv_scorer_without_stats_is_neutral():
    assert KVCacheScorer(0.9).score([candidate_for(None, "a")]) == [0.5]


@pytest.mark.parametrize(
    ("placement", "adapter", "expected"),
    [
        ({"a": {"r0"}}, "a", [1.0, 0.0]),
        ({"a": {"r1"}}, "a", [0.0, 1.0]),
        ({"b": {"r0"}}, "a", [0.0, 0.0]),  # hint for another adapter
        ({}, "a", [0.0, 0.0]),
        (None, "a", [0.0, 0.0]),
        ({"a": {"r0"}}, None, [0.0, 0.0]),  # base-model request
    ],
)
def test_placement_scorer(placement, adapter, expected):
    view = ClusterView([ReplicaStats("r0"), ReplicaStats("r1")], placement=placement)
    cands = view.candidates(["r0", "r1"], adapter, InflightTracker())
    assert PlacementScorer().score(cands) == expected


def _home_of(adapter: str, replicas: list[str]) -> str:
    view = ClusterView([ReplicaStats(r, gpu_slots=2) for r in replicas])
    scores = HomeScorer().score(view.candidates(replicas, adapter, InflightTracker()))
    assert sorted(scores) == [0.0] * (len(replicas) - 1) + [1.0]  # exactly one home
    return replicas[scores.index(1.0)]


def test_home_is_stable_and_independent_of_candidate_order():
    replicas = [f"r{i}" for i in range(8)]
    for adapter in ("a", "b", "tail-17"):
        assert _home_of(adapter, replicas) == _home_of(adapter, list(reversed(replicas)))


def test_homes_split_a_tail_across_replicas():
    replicas = ["r0", "r1", "r2"]
    homes = [_home_of(f"adapter-{i}", replicas) for i in range(300)]
    assert {r: homes.count(r) for r in replicas} == pytest.approx({r: 100 for r in replicas}, abs=30)


def test_only_a_departed_replicas_adapters_change_home():
    before = {f"a{i}": _home_of(f"a{i}", ["r0", "r1", "r2", "r3"]) for i in range(200)}
    after = {a: _home_of(a, ["r0", "r1", "r2"]) for a in before}
    moved = {a for a in before if before[a] != after[a]}
    assert moved == {a for a, home in before.items() if home == "r3"}


@pytest.mark.parametrize(
    ("stats", "adapter"),
    [
        pytest.param(ReplicaStats("r1", gpu_slots=2, gpu_resident=("a",)), "a", id="held-in-gpu"),
        pytest.param(ReplicaStats("r1", gpu_slots=2, cpu_resident=("a",)), "a", id="held-in-cpu"),
        pytest.param(ReplicaStats("r1", gpu_slots=2, loading=("a",)), "a", id="loading"),
        pytest.param(ReplicaStats("r1", gpu_slots=2), None, id="base-model"),
    ],
)
def test_home_is_neutral_when_someone_holds_the_adapter(stats, adapter):
    view = ClusterView([ReplicaStats("r0", gpu_slots=2), stats, ReplicaStats("r2", gpu_slots=2)])
    cands = view.candidates(["r0", "r1", "r2"], adapter, InflightTracker())
    assert HomeScorer().score(cands) == [0.0, 0.0, 0.0]


def test_cold_adapter_goes_home_unless_home_is_busier():
    replicas = ["r0", "r1", "r2"]
    full = [ReplicaStats(r, gpu_slots=2, gpu_resident=("x", "y")) for r in replicas]
    home = _home_of("cold", replicas)
    policy = make_policy()
    assert policy.rank("cold", ClusterView(full), InflightTracker(), Random(0))[0] == home
    busy = InflightTracker()
    for _ in range(4):
        busy.on_assign(home)
    assert policy.rank("cold", ClusterView(full), busy, Random(0))[0] != home


@pytest.mark.parametrize(
    ("stats", "adapter", "expected"),
    [
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("a", "b")), "a", 1.0, id="active"
        ),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("b",)), "a", 0.8, id="free-slot"
        ),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("b",), loading=("a",)),
            "a",
            0.6,
            id="queued",
        ),
        pytest.param(ReplicaStats("r0", gpu_slots=1, loading=("a",)), "a", 0.6, id="queued-full"),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("b", "c"), cpu_resident=("a",)),
            "a",
            0.0,
            id="cpu-only-is-absent-to-llmd",
        ),
        pytest.param(ReplicaStats("r0", gpu_slots=2, gpu_resident=("b", "c")), "a", 0.0, id="full"),
        pytest.param(None, "a", 0.0, id="no-stats"),
        pytest.param(
            ReplicaStats("r0", gpu_slots=2, gpu_resident=("b", "c")), None, 1.0, id="base"
        ),
    ],
)
def test_llmd_lora_affinity_tiers(stats, adapter, expected):
    assert LlmdLoraAffinityScorer().score([candidate_for(stats, adapter)]) == [expected]


def test_llmd_queue_scorer_min_max_on_reported_queue_only():
    view = ClusterView([ReplicaStats(f"r{i}", queue_len=q) for i, q in enumerate((0, 5, 10))])
    inflight = InflightTracker()
    for _ in range(50):
        inflight.on_assign("r0")  # invisible to llm-d: it reads only engine metrics
    cands = view.candidates(["r0", "r1", "r2"], "a", inflight)
    assert LlmdQueueScorer().score(cands) == [1.0, 0.5, 0.0]
    assert LlmdQueueScorer().score(cands[:1]) == [1.0]


class _Constant:
    name = "constant"

    def __init__(self, values):
        self.values = values

    def score(self, candidates):
        return list(self.values)


@pytest.mark.parametrize(
    ("raw", "weight", "totals"),
    [
        ((1.7, -0.3, 0.5), 2.0, {"r0": 2.0, "r1": 0.0, "r2": 1.0}),
        ((0.25, 0.5, 1.0), 0.5, {"r0": 0.125, "r1": 0.25, "r2": 0.5}),
    ],
)
def test_chain_clamps_scores_to_unit_interval_then_weights(raw, weight, totals):
    view = ClusterView([ReplicaStats(f"r{i}") for i in range(3)])
    policy = ChainPolicy(
        "t",
        sampler=AllRoutable(),
        filters=[HealthyFilter()],
        scorers=[(weight, _Constant(raw))],
        picker=MaxScorePicker(),
    )
    decided = policy.decide("a", view, InflightTracker(), Random(0))
    assert {d.replica_id: d.total for d in decided} == pytest.approx(totals)
    assert [d.replica_id for d in decided] == sorted(totals, key=totals.get, reverse=True)


def test_zero_weight_scorer_is_not_computed():
    class Exploding:
        name = "boom"

        def score(self, candidates):
            raise AssertionError("zero-weight scorer was called")

    policy = ChainPolicy(
        "t",
        sampler=AllRoutable(),
        filters=[],
        scorers=[(0.0, Exploding())],
        picker=MaxScorePicker(),
    )
    assert policy.rank("a", ClusterView([ReplicaStats("r0")]), InflightTracker(), Random(0)) == [
        "r0"
    ]


@pytest.mark.parametrize(
    ("running", "adapter", "expected"),
    [
        pytest.param([], "c", 1.0, id="idle"),
        pytest.param(["a"], "c", 1.0, id="a-slot-free"),
        pytest.param(["a", "b"], "c", 0.0, id="slots-busy-with-others"),
        pytest.param(["a", "b"], "a", 1.0, id="joins-a-running-adapter"),
        pytest.param(["a", "b"], None, 1.0, id="base-model"),
        pytest.param(["a", None, None], "c", 1.0, id="base-requests-take-no-slot"),
    ],
)
def test_slot_scorer(running, adapter, expected):
    view = ClusterView([ReplicaStats("r0", gpu_slots=2)])
    inflight = InflightTracker()
    for name in running:
        inflight.on_assign("r0", name)
    assert SlotScorer().score(view.candidates(["r0"], adapter, inflight)) == [expected]


def test_home_is_neutral_when_the_controller_plans_the_adapter_somewhere():
    """The plan is a better home than a hash: the cold adapter goes where it will live."""
    replicas = ["r0", "r1", "r2"]
    view = ClusterView([ReplicaStats(r, gpu_slots=2) for r in replicas], placement={"a": ["r1"]})
    assert HomeScorer().score(view.candidates(replicas, "a", InflightTracker())) == [0.0, 0.0, 0.0]
