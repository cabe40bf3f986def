"""Filters: health, hard load cap, hot-adapter spreading."""

from __future__ import annotations

import pytest

from cluster.routing import HealthyFilter, LoadCapFilter, Residency, SpreadFilter
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
