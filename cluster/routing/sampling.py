"""Which replicas a decision considers at all.

Scoring every replica costs O(R) per request; at 1,024 replicas and thousands of
requests per second that is the router's whole CPU budget. Scoring a well-chosen
sample of k costs O(k) and loses almost nothing: the replicas worth picking for an
adapter are the few that hold it (found through the view's index), and for load the
best of a random sample of k is, with high probability, among the least-loaded
few percent of the fleet (the power-of-k-choices argument).
"""

from __future__ import annotations

from collections.abc import Sequence
from random import Random
from typing import Protocol

from cluster.routing.view import ClusterView
from cluster.stats import Tier


class Sampler(Protocol):
    """Chooses the candidate replica ids for one request, best-effort routable only."""

    def sample(self, adapter: str | None, view: ClusterView, rng: Random) -> Sequence[str]: ...


class AllRoutable:
    """Every routable replica: O(R) per decision.

    Right when the fleet is small, and for baselines whose published behaviour
    scores every endpoint (llm-d), where sampling would change what is compared.
    """

    def sample(self, adapter: str | None, view: ClusterView, rng: Random) -> Sequence[str]:
        return view.routable_ids


class AffinitySampler:
    """Holders of the adapter (capped) plus a random sample, `sample_k` in all.

    With at most `sample_k` routable replicas, all of them. Otherwise:

    1. up to `holders_cap` "preferred" replicas, taken tier by tier: GPU holders,
       then CPU holders, then replicas loading the adapter, then replicas the
       placement hint wants to hold it. Within the tier that overflows the cap, a
       random subset, so a hot adapter held by many replicas still spreads its
       requests over all of them across decisions.
    2. a uniform random sample of the other routable replicas, filling up to
       `sample_k`. Because `holders_cap < sample_k`, at least `sample_k -
       holders_cap` non-preferred replicas are always present, so a less-loaded
       replica exists to spread a hot adapter to.

    Cost: O(sample_k) per decision: the index gives each tier's holders in O(1), and
    `Random.sample` draws k of n in O(k); draws that hit an already chosen replica
    are discarded, which is why each draw asks for (wanted + already chosen) ids.
    The result never has more than `max(sample_k, holders_cap)` ids.
    """

    def __init__(self, sample_k: int, holders_cap: int) -> None:
        if sample_k < 1 or holders_cap < 0:
            raise ValueError("sample_k must be >= 1 and holders_cap >= 0")
        self.sample_k = sample_k
        self.holders_cap = holders_cap

    def sample(self, adapter: str | None, view: ClusterView, rng: Random) -> Sequence[str]:
        population = view.routable_ids
        if len(population) <= self.sample_k:
            return population
        chosen: list[str] = []
        seen: set[str] = set()
        if adapter:
            for group in (
                view.holders_in(adapter, Tier.GPU),
                view.holders_in(adapter, Tier.CPU),
                view.holders_in(adapter, Tier.LOADING),
                view.desired(adapter),
            ):
                room = self.holders_cap - len(chosen)
                if room <= 0:
                    break
                _take(group, room, chosen, seen, rng, view)
        _take(population, self.sample_k - len(chosen), chosen, seen, rng, view)
        return chosen


def _take(
    group: Sequence[str],
    wanted: int,
    chosen: list[str],
    seen: set[str],
    rng: Random,
    view: ClusterView,
) -> None:
    """Append up to `wanted` routable ids from `group` not already in `seen`."""
    if wanted <= 0 or not group:
        return
    if len(group) > wanted:  # more than needed: which ones must be random, not list order
        group = rng.sample(group, min(len(group), wanted + len(seen)))
    for rid in group:
        if rid in seen or not view.is_routable(rid):
            continue
        chosen.append(rid)
        seen.add(rid)
        wanted -= 1
        if wanted == 0:
            return
