"""What one routing decision knows about one replica.

A `Candidate` is built once per considered replica per decision (O(k) of them, see
`sampling.py`), with everything request-specific already resolved: the replica's load
and where the request's adapter sits on it. Filters and scorers then read plain
attributes and never look anything up, which keeps each of them a one-liner over a
short list and keeps a decision cheap at 1,000 replicas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from cluster.stats import ReplicaStats


class Residency(str, Enum):
    """Where the request's adapter sits relative to one replica, best first.

    The tier is what the request pays before its first token, beyond queueing:
    nothing (GPU), a host-to-device copy (CPU), the rest of a read already under way
    (LOADING), a read from the store (FREE_SLOT), a read plus evicting another
    adapter that may be needed again soon (NEEDS_EVICTION). UNKNOWN is a replica the
    router has no stats for yet; BASE is a base-model request, for which residency
    does not apply.
    """

    GPU = "gpu"
    CPU = "cpu"
    LOADING = "loading"
    FREE_SLOT = "free_slot"
    NEEDS_EVICTION = "needs_eviction"
    UNKNOWN = "unknown"
    BASE = "base"


def replica_load(stats: ReplicaStats | None, inflight: int) -> int:
    """The load used by every load-aware filter, scorer and baseline.

    `max(router's own in-flight count, reported running + queue_len)`. Reported stats
    lag by up to one stats period, so a burst routed within that period is invisible
    in them; the router's own count sees it at once. The two are not added: the
    router's requests are already part of the reported numbers once the replica has
    reported, so a sum would count them twice. With several routers (one per
    ingress replica) each sees only its own in-flight requests, which the reported
    numbers make up for after one period.
    """
    if stats is None:
        return inflight
    return max(inflight, stats.running + stats.queue_len)


@dataclass(slots=True)
class Candidate:
    """One replica as seen by one routing decision.

    `stats` is None for a replica the router can reach but has no stats for yet
    (just started, or its first report is late). `free_slot` says whether the
    replica could take one more adapter into a GPU slot without evicting one (it
    counts adapters being loaded as taking a slot). `desired` says whether the
    placement controller wants this replica to hold the request's adapter. `adapter`
    is the request's adapter (None for the base model), for scorers that key on it.
    `slot_wait` says the replica is already running requests of as many other
    adapters as it has LoRA slots (by the router's own in-flight count), so vLLM
    would hold this request back until one of them drains.
    """

    replica_id: str
    stats: ReplicaStats | None
    load: int
    residency: Residency
    free_slot: bool = False
    desired: bool = False
    adapter: str | None = None
    slot_wait: bool = False


@dataclass(slots=True)
class ScoredCandidate:
    """A candidate with its total score and each scorer's weighted contribution,
    kept so a decision can be logged, exported as metrics or asserted on in tests."""

    candidate: Candidate
    total: float
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def replica_id(self) -> str:
        return self.candidate.replica_id
