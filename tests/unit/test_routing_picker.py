"""The picker: best total first, ties broken by the injected rng."""

from __future__ import annotations

from collections import Counter
from random import Random

import pytest

from cluster.routing import MaxScorePicker, Residency, ScoredCandidate
from cluster.routing.candidates import Candidate


def scored(**totals: float) -> list[ScoredCandidate]:
    return [
        ScoredCandidate(Candidate(rid, None, 0, Residency.BASE), total)
        for rid, total in totals.items()
    ]


def order(result: list[ScoredCandidate]) -> list[str]:
    return [s.replica_id for s in result]


@pytest.mark.parametrize(
    ("totals", "expected"),
    [
        ({"a": 0.1, "b": 2.5, "c": 1.0}, ["b", "c", "a"]),
        ({"a": 3.0, "b": 2.0, "c": 1.0}, ["a", "b", "c"]),
        ({"only": 0.0}, ["only"]),
        ({}, []),
    ],
)
def test_highest_total_first(totals, expected):
    assert order(MaxScorePicker().pick(scored(**totals), Random(0))) == expected


def test_ties_are_deterministic_for_a_seed():
    given = scored(a=1.0, b=1.0, c=1.0, d=1.0)
    first = order(MaxScorePicker().pick(given, Random(42)))
    assert all(order(MaxScorePicker().pick(given, Random(42))) == first for _ in range(5))


def test_ties_are_broken_randomly_not_by_position():
    given = scored(a=1.0, b=1.0, c=1.0, d=1.0, worse=0.5)
    winners = Counter(order(MaxScorePicker().pick(given, Random(seed)))[0] for seed in range(400))
    assert set(winners) == {"a", "b", "c", "d"}
    assert min(winners.values()) > 60  # roughly uniform, ~100 each
    assert all(order(MaxScorePicker().pick(given, Random(s)))[-1] == "worse" for s in range(50))


def test_float_noise_counts_as_a_tie():
    given = scored(a=0.1 + 0.2, b=0.3)  # 0.30000000000000004 vs 0.3
    winners = {order(MaxScorePicker().pick(given, Random(seed)))[0] for seed in range(50)}
    assert winners == {"a", "b"}


def test_returns_every_candidate_once():
    given = scored(**{f"r{i}": float(i % 3) for i in range(20)})
    assert sorted(order(MaxScorePicker().pick(given, Random(1)))) == sorted(
        f"r{i}" for i in range(20)
    )
