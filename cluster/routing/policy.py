"""The policy interface and the sample -> filter -> weighted score -> pick chain."""

from __future__ import annotations

from collections.abc import Sequence
from random import Random
from typing import NamedTuple, Protocol

from cluster.routing.candidates import ScoredCandidate
from cluster.routing.filters import Filter
from cluster.routing.inflight import InflightTracker
from cluster.routing.pickers import Picker
from cluster.routing.sampling import Sampler
from cluster.routing.scorers import Scorer
from cluster.routing.view import ClusterView


class RoutingPolicy(Protocol):
    """Ranks replicas for one request.

    `rank(adapter, view, inflight, rng, waited_s=0.0)` returns replica ids, best
    first; possibly fewer than the fleet (policies rank only what they considered),
    empty when no replica may take the request (the caller falls back: retry with
    backoff, or Overloaded). `adapter` None or "" is a base-model request.
    `waited_s` is how long the request has already waited at the router: a policy
    may hold a request back for a better replica only so long (see
    `ChainPolicy.patience_s`); callers that do not track it pass nothing.

    Why this shape: the view (stats snapshot + index) changes once per stats period
    and is built by the caller then; the in-flight tracker is the caller's live
    counter; the rng is injected so tests and the simulator are reproducible. The
    policy itself holds only its configuration, so one instance can serve any
    number of routers and simulated fleets. It does not update `inflight`: the
    caller does, once it knows which replica actually accepted the request.
    """

    name: str

    def rank(
        self,
        adapter: str | None,
        view: ClusterView,
        inflight: InflightTracker,
        rng: Random,
        waited_s: float = 0.0,
    ) -> list[str]: ...


class WeightedScorer(NamedTuple):
    weight: float
    scorer: Scorer


class ChainPolicy:
    """sample -> filters -> weighted scorers -> picker.

    Each scorer's output is clamped to [0, 1] and multiplied by its weight; a
    candidate's total is the sum. Zero-weight scorers are skipped (not computed).
    Filters marked `patient` (they may leave nobody, to make a request wait for a
    better replica) are skipped once the request has waited `patience_s` at the
    router, so waiting is bounded.
    Cost per decision: O(n * (F + S) + n log n) for n sampled candidates, F filters
    and S scorers; with AffinitySampler n <= sample_k, independent of fleet size.
    """

    def __init__(
        self,
        name: str,
        *,
        sampler: Sampler,
        filters: Sequence[Filter],
        scorers: Sequence[WeightedScorer | tuple[float, Scorer]],
        picker: Picker,
        patience_s: float = float("inf"),
    ) -> None:
        self.name = name
        self.sampler = sampler
        self.filters = tuple(filters)
        self.impatient_filters = tuple(f for f in self.filters if not getattr(f, "patient", False))
        self.patience_s = patience_s
        self.scorers = tuple(WeightedScorer(float(w), s) for w, s in scorers if w != 0)
        self.picker = picker

    def decide(
        self,
        adapter: str | None,
        view: ClusterView,
        inflight: InflightTracker,
        rng: Random,
        waited_s: float = 0.0,
    ) -> list[ScoredCandidate]:
        """The full ranking with each candidate's total and per-scorer contributions
        (`parts`, keyed by scorer name): for logs, metrics and tests."""
        adapter = adapter or None
        ids = self.sampler.sample(adapter, view, rng)
        candidates = view.candidates(ids, adapter, inflight)
        filters = self.filters if waited_s < self.patience_s else self.impatient_filters
        for f in filters:
            if not candidates:
                return []
            candidates = f.filter(candidates)
        if not candidates:
            return []
        scored = [ScoredCandidate(c, 0.0) for c in candidates]
        for weight, scorer in self.scorers:
            values = scorer.score(candidates)
            for sc, value in zip(scored, values, strict=True):
                contribution = weight * min(1.0, max(0.0, value))
                sc.parts[scorer.name] = contribution
                sc.total += contribution
        return self.picker.pick(scored, rng)

    def rank(
        self,
        adapter: str | None,
        view: ClusterView,
        inflight: InflightTracker,
        rng: Random,
        waited_s: float = 0.0,
    ) -> list[str]:
        return [sc.replica_id for sc in self.decide(adapter, view, inflight, rng, waited_s)]
