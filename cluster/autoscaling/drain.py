"""Which replica to drain on a scale-down: the one whose adapters re-home most cheaply.

A replica's adapters fall into two groups when it leaves: those another replica also
holds (GPU, host memory or loading) lose nothing, their requests go there; those it
holds alone must be read from the store again elsewhere, and until then their
requests find them cold. So a replica's re-home cost is, over the adapters only it
holds, request rate x store read time: the request-seconds of reads its leaving
causes per second of demand. The cheapest goes first; among equals, the one with
the fewest requests to finish (it drains soonest), then the newest.

Several victims are chosen one at a time, each time as if the earlier ones were
gone already (an adapter two victims share becomes exclusive to the second).

Draining itself loses nothing: the platform stops routing to the replica, which
finishes every request it runs or holds before it stops (Ray Serve: graceful
shutdown; `graceful_shutdown_timeout_s` must then exceed the longest request).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cluster.placement.demand import AdapterDemand
from cluster.stats import ReplicaStats


@dataclass(frozen=True)
class DrainChoice:
    replica_id: str
    rehome_cost: float  # request-seconds of store reads per second its leaving causes
    exclusive: tuple[str, ...]  # adapters only this replica holds
    exclusive_rps: float  # their request rate
    inflight: int  # requests it still has to finish
    why: str


def held(stats: ReplicaStats) -> set[str]:
    return set(stats.gpu_resident).union(stats.cpu_resident, stats.loading)


def choose_drains(
    replicas: Sequence[ReplicaStats],
    count: int,
    demand: Mapping[str, AdapterDemand],
    *,
    read_s: Mapping[str, float] | None = None,
    default_read_s: float = 0.0,
    removable: Sequence[str] | None = None,
) -> list[DrainChoice]:
    """Up to `count` replicas to drain, cheapest to lose first.

    `replicas`: the serving fleet (draining or unhealthy ones are ignored: they
    hold nothing for the others). `removable`: the replicas the platform lets the
    policy remove, in the platform's own order (the last tie-break); None: any.
    """
    read_s = read_s or {}
    live = {s.replica_id: s for s in replicas if s.healthy and not s.draining}
    holders: dict[str, set[str]] = {}
    for rid, s in live.items():
        for a in held(s):
            holders.setdefault(a, set()).add(rid)
    if removable is None:
        order = {rid: -i for i, rid in enumerate(sorted(live))}  # newest (highest id) first
    else:
        order = {rid: i for i, rid in enumerate(removable) if rid in live}
    candidates = [rid for rid in live if rid in order]
    chosen: list[DrainChoice] = []
    for _ in range(min(count, len(candidates))):
        best: tuple[tuple[float, int, int], DrainChoice] | None = None
        for rid in candidates:
            s = live[rid]
            exclusive = sorted(a for a in held(s) if holders.get(a) == {rid})
            rps = sum(demand[a].req_rate for a in exclusive if a in demand)
            cost = sum(demand[a].req_rate * read_s.get(a, default_read_s) for a in exclusive if a in demand)
            inflight = s.running + s.queue_len
            key = (round(cost, 12), inflight, order[rid])
            if best is None or key < best[0]:
                why = (
                    f"{rid}: {len(exclusive)} adapters held only here ({rps:.3g} req/s, "
                    f"{cost:.3g} read-s/s to re-home), {inflight} requests to finish"
                )
                best = (key, DrainChoice(rid, cost, tuple(exclusive), rps, inflight, why))
        assert best is not None
        choice = best[1]
        chosen.append(choice)
        candidates.remove(choice.replica_id)
        for a in held(live[choice.replica_id]):
            holders[a].discard(choice.replica_id)
    return chosen
