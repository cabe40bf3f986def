"""One snapshot of the fleet, indexed for routing.

Build a `ClusterView` when replica stats (or the placement table) change, not per
request: building is O(R + total resident adapters) for R replicas, after which
every per-request lookup the policies need is O(1) or O(answer). That split is what
lets one decision cost O(sample_k) at 1,024 replicas.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import cached_property

from cluster.routing.candidates import Candidate, Residency, replica_load
from cluster.routing.inflight import InflightTracker
from cluster.stats import ReplicaStats, Tier

_HELD_TIERS = (Tier.GPU, Tier.CPU, Tier.LOADING)
_TIER_POSITION = {tier: i for i, tier in enumerate(_HELD_TIERS)}
_TIER_RESIDENCY = {
    Tier.GPU: Residency.GPU,
    Tier.CPU: Residency.CPU,
    Tier.LOADING: Residency.LOADING,
}


def is_routable(stats: ReplicaStats) -> bool:
    """The one definition of "may receive requests": the replica says it is healthy
    and is not draining (being removed by a scale-down: it finishes what it has).

    A replica with no stats yet counts as routable (Ray Serve only lists replicas
    that are running); it is scored low on residency instead, so it is neither
    starved nor preferred blindly.
    """
    return stats.healthy and not stats.draining


class ClusterView:
    """Replica stats + placement hint, with an adapter -> holders index.

    Args:
        stats: one ReplicaStats per replica the router can reach. `replica_id` must be
            the id the caller maps back to its replica handle. A repeated id keeps the
            last entry.
        no_stats: ids of replicas the router can reach but has no stats for yet.
        placement: adapter -> replica ids the placement controller wants to hold it.
            Empty or None when there is no controller (yet).

    The index covers routable (healthy) replicas only, so sampling never spends a
    slot on a dead holder. Treat a view as immutable; `with_placement` derives a new
    one cheaply when only the placement table changed.
    """

    def __init__(
        self,
        stats: Iterable[ReplicaStats] = (),
        *,
        no_stats: Iterable[str] = (),
        placement: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        self._stats: dict[str, ReplicaStats] = {s.replica_id: s for s in stats}
        unknown = [rid for rid in dict.fromkeys(no_stats) if rid not in self._stats]
        self._unknown = frozenset(unknown)
        self.replica_ids: tuple[str, ...] = tuple(self._stats) + tuple(unknown)

        routable = [rid for rid, s in self._stats.items() if is_routable(s)]
        routable.extend(unknown)
        self.routable_ids: tuple[str, ...] = tuple(routable)
        self._routable = frozenset(routable)

        # adapter -> {replica_id: best tier}, and adapter -> (gpu ids, cpu ids, loading ids)
        self._tier_of: dict[str, dict[str, Tier]] = {}
        self._by_tier: dict[str, tuple[list[str], list[str], list[str]]] = {}
        self._free_slot: dict[str, bool] = {}
        for rid, s in self._stats.items():
            self._free_slot[rid] = _has_free_slot(s)
            if not is_routable(s):
                continue
            for position, (tier, names) in enumerate(
                ((Tier.GPU, s.gpu_resident), (Tier.CPU, s.cpu_resident), (Tier.LOADING, s.loading))
            ):
                for adapter in names:
                    tiers = self._tier_of.setdefault(adapter, {})
                    if rid in tiers:  # already listed in a better tier
                        continue
                    tiers[rid] = tier
                    self._by_tier.setdefault(adapter, ([], [], []))[position].append(rid)

        self._set_placement(placement)

    def _set_placement(self, placement: Mapping[str, Collection[str]] | None) -> None:
        self._desired: dict[str, tuple[str, ...]] = {}
        self._desired_set: dict[str, frozenset[str]] = {}
        for adapter, rids in (placement or {}).items():
            ordered = tuple(dict.fromkeys(rids))
            if ordered:
                self._desired[adapter] = ordered
                self._desired_set[adapter] = frozenset(ordered)

    def with_placement(self, placement: Mapping[str, Collection[str]] | None) -> ClusterView:
        """The same replica snapshot with a new placement table; O(size of the table)."""
        view = copy.copy(self)
        view._set_placement(placement)
        return view

    # ---- lookups -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.replica_ids)

    def __contains__(self, replica_id: object) -> bool:
        return replica_id in self._stats or replica_id in self._unknown

    def stats(self, replica_id: str) -> ReplicaStats | None:
        """The replica's stats, or None if it has none (or is not in the view)."""
        return self._stats.get(replica_id)

    def is_routable(self, replica_id: str) -> bool:
        return replica_id in self._routable

    def holders(self, adapter: str, tiers: Iterable[Tier] = _HELD_TIERS) -> tuple[str, ...]:
        """Routable replicas holding `adapter` in any of `tiers`, better tiers first."""
        groups = self._by_tier.get(adapter)
        if groups is None:
            return ()
        out: list[str] = []
        for tier in tiers:
            position = _TIER_POSITION.get(tier)
            if position is not None:
                out.extend(groups[position])
        return tuple(out)

    def holders_in(self, adapter: str, tier: Tier) -> Sequence[str]:
        """Routable replicas holding `adapter` in exactly `tier` (no copy: do not mutate)."""
        groups = self._by_tier.get(adapter)
        position = _TIER_POSITION.get(tier)
        if groups is None or position is None:
            return ()
        return groups[position]

    def desired(self, adapter: str) -> tuple[str, ...]:
        """Replica ids the placement controller wants to hold `adapter`, as given."""
        return self._desired.get(adapter, ())

    def residency(self, adapter: str | None, replica_id: str) -> Residency:
        """Where `adapter` sits relative to `replica_id` (see Residency)."""
        tiers = self._tier_of.get(adapter) if adapter else None
        return self._residency(adapter, replica_id, tiers)

    def _residency(
        self, adapter: str | None, replica_id: str, tiers: Mapping[str, Tier] | None
    ) -> Residency:
        if not adapter:
            return Residency.BASE
        stats = self._stats.get(replica_id)
        if stats is None:
            return Residency.UNKNOWN
        tier = tiers.get(replica_id) if tiers is not None else None
        if tier is None and replica_id not in self._routable:
            tier = stats.tier_of(adapter)  # unhealthy replicas are not indexed
        if tier is not None and tier is not Tier.ABSENT:
            return _TIER_RESIDENCY[tier]
        return Residency.FREE_SLOT if self._free_slot[replica_id] else Residency.NEEDS_EVICTION

    def candidate(
        self, replica_id: str, adapter: str | None, inflight: InflightTracker
    ) -> Candidate:
        """Resolve one replica for one request; O(1)."""
        return self.candidates((replica_id,), adapter, inflight)[0]

    def candidates(
        self, replica_ids: Iterable[str], adapter: str | None, inflight: InflightTracker
    ) -> list[Candidate]:
        """Resolve replicas for one request: O(1) each, after looking the adapter up
        in the index once."""
        tiers = self._tier_of.get(adapter) if adapter else None
        desired = self._desired_set.get(adapter, frozenset()) if adapter else frozenset()
        stats_of = self._stats.get
        free_slot = self._free_slot.get
        out = []
        for rid in replica_ids:
            stats = stats_of(rid)
            slot_wait = False
            if adapter and stats is not None:
                active = inflight.active_adapters(rid)
                slot_wait = adapter not in active and len(active) >= stats.gpu_slots
            out.append(
                Candidate(
                    replica_id=rid,
                    stats=stats,
                    load=replica_load(stats, inflight.count(rid)),
                    residency=self._residency(adapter, rid, tiers),
                    free_slot=free_slot(rid, False),
                    desired=rid in desired,
                    adapter=adapter,
                    slot_wait=slot_wait,
                )
            )
        return out

    @cached_property
    def fewest_adapters_ids(self) -> tuple[str, ...]:
        """Routable replicas with stats holding the fewest adapters (GPU + CPU).

        Ray Serve's multiplex routing falls back to these when no replica has the
        model; computed once per view, on first use, since only that baseline asks.
        """
        counts = {
            rid: len(set(s.gpu_resident).union(s.cpu_resident))
            for rid, s in self._stats.items()
            if rid in self._routable
        }
        if not counts:
            return self.routable_ids
        fewest = min(counts.values())
        return tuple(rid for rid, n in counts.items() if n == fewest)


def _has_free_slot(stats: ReplicaStats) -> bool:
    """Whether one more adapter fits in a GPU slot without evicting one. Adapters
    being loaded count as taking a slot: they will occupy one as soon as they run."""
    occupied = len(set(stats.gpu_resident).union(stats.loading))
    return occupied < stats.gpu_slots
