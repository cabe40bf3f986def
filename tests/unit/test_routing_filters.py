"""Filters: health, hard load cap, waiting for a free LoRA slot, hot-adapter spreading."""

from __future__ import annotations

from random import Random

import pytest

from cluster.routing import (
    ClusterView,
    HealthyFilter,
    InflightTracker,
    LoadCapFilter,
    Residency,
    RoutingSettings,
    SlotWaitFilter,
    SpreadFilter,
    make_policy,
)
from cluster.routing.candidates import Candidate
from cluster.stats import ReplicaStats


def cands(*loads: int) -> list[Candidate]:
    return [
        Candidate(f"r{i}", ReplicaStats(f"r{i}"), load, Residency.BASE)
        for i, load in enumerate(loads)
    ]


def ids(candidates: list[Candidate]) -> list[str]:
    return [c.replica_id for c in candidates]


def test_healthy_filter_drops_unhealthy_keeps_no_stats():
    given = [
        Candidate("ok", ReplicaStats("ok"), 0, Residency.BASE),
        Candidate("sick", ReplicaStats("sick", healthy=False), 0, Residency.BASE),
        Candidate("fresh", None, 0, Residency.UNKNOWN),
    ]
    assert ids(HealthyFilter().filter(given)) == ["ok", "fresh"]


def test_healthy_filter_all_unhealthy_is_empty():
    given = [
        Candidate(f"r{i}", ReplicaStats(f"r{i}", healthy=False), 0, Residency.BASE)
        for i in range(3)
    ]
    assert HealthyFilter().filter(given) == []


@pytest.mark.parametrize(
    ("loads", "cap", "kept"),
    [
        ((0, 5, 6, 10), 5, ["r0", "r1"]),
        ((7, 8), 5, []),  # everyone over the cap: caller backs off
        ((0, 0), 0, ["r0", "r1"]),
    ],
)
def test_load_cap_filter(loads, cap, kept):
    assert ids(LoadCapFilter(cap).filter(cands(*loads))) == kept


@pytest.mark.parametrize(
    ("loads", "threshold", "ratio", "kept"),
    [
        pytest.param((0, 4, 5, 9), 4, 1.5, ["r0", "r1"], id="absolute-gap-at-low-load"),
        pytest.param(
            (20, 24, 25, 30, 31), 4, 1.5, ["r0", "r1", "r2", "r3"], id="ratio-slack-at-high-load"
        ),
        pytest.param((20, 24, 25, 30), 4, 1.0, ["r0", "r1"], id="ratio-1-is-absolute-only"),
        pytest.param((3, 3, 3), 0, 1.0, ["r0", "r1", "r2"], id="ties-all-kept"),
        pytest.param((9,), 0, 1.0, ["r0"], id="single-candidate-never-dropped"),
        pytest.param((), 4, 1.5, [], id="empty"),
    ],
)
def test_spread_filter(loads, threshold, ratio, kept):
    assert ids(SpreadFilter(threshold, ratio).filter(cands(*loads))) == kept


def test_spread_filter_never_drops_the_least_loaded():
    for loads in [(0, 100), (50, 1), (7, 7, 200, 3)]:
        kept = SpreadFilter(0, 1.0).filter(cands(*loads))
        assert min(c.load for c in kept) == min(loads)


def test_slot_wait_filter_drops_replicas_whose_slots_run_other_adapters():
    given = [
        Candidate("busy", ReplicaStats("busy"), 3, Residency.FREE_SLOT, slot_wait=True),
        Candidate("room", ReplicaStats("room"), 9, Residency.FREE_SLOT),
    ]
    assert ids(SlotWaitFilter().filter(given)) == ["room"]
    assert SlotWaitFilter().filter(given[:1]) == []  # nobody: the request waits at the router


@pytest.mark.parametrize(
    ("waited_s", "expected"),
    [
        pytest.param(0.0, [], id="fresh request: waits at the router for a slot"),
        pytest.param(0.49, [], id="still within its patience"),
        pytest.param(0.5, ["r0", "r1"], id="patience used up: any replica"),
    ],
)
def test_a_request_waits_for_a_free_slot_only_as_long_as_the_policy_is_patient(waited_s, expected):
    """Both replicas run two other adapters on their two slots; adapter c waits."""
    view = ClusterView([ReplicaStats(f"r{i}", gpu_slots=2, cpu_slots=4) for i in range(2)])
    inflight = InflightTracker()
    for rid in ("r0", "r1"):
        inflight.on_assign(rid, "a")
        inflight.on_assign(rid, "b")
    policy = make_policy("adapter_affinity", RoutingSettings(slot_wait_patience_s=0.5))
    assert sorted(policy.rank("c", view, inflight, Random(0), waited_s)) == expected
    assert sorted(policy.rank("a", view, inflight, Random(0))) == ["r0", "r1"]  # a runs there
    off = make_policy("adapter_affinity", RoutingSettings(queue_when_slots_busy=False))
    assert sorted(off.rank("c", view, inflight, Random(0))) == ["r0", "r1"]
