"""Pickers: turn scored candidates into a ranking."""

from __future__ import annotations

from collections.abc import Sequence
from random import Random
from typing import Protocol

from cluster.routing.candidates import ScoredCandidate

# Totals are sums of a few products of floats; equal inputs give equal floats, but
# two paths to "the same" score (e.g. weights 0.1 + 0.2) may not. Rounding to this
# many decimals makes such near-ties real ties, which are then broken at random.
_TIE_DECIMALS = 9


class Picker(Protocol):
    name: str

    def pick(self, scored: Sequence[ScoredCandidate], rng: Random) -> list[ScoredCandidate]: ...


class MaxScorePicker:
    """Highest total first; ties broken uniformly at random with the given rng.

    Why random ties and not list order: candidates arrive in fleet order, so
    "first wins" would send every tied request (e.g. all base-model requests on an
    idle fleet) to the same replica; random breaking spreads them, and an injected,
    seeded `random.Random` keeps tests and the simulator reproducible.

    Returns the whole ranking, not one winner, so the caller can try the next
    replica when the first rejects the request (full, or gone since the snapshot).
    O(n log n) for n candidates (n <= sample_k with the default sampler).
    """

    name = "max_score"

    def pick(self, scored: Sequence[ScoredCandidate], rng: Random) -> list[ScoredCandidate]:
        keyed = [(-round(s.total, _TIE_DECIMALS), rng.random(), i) for i, s in enumerate(scored)]
        keyed.sort()
        return [scored[i] for _, _, i in keyed]
