"""Filters: remove candidates that must not get the request, before any scoring.

A filter is for hard rules (never route here) and for rules a weighted sum cannot
express reliably (never let a holder pile up more than N requests above the rest,
whatever the weights). An empty result means "no replica can take it now": the
policy returns an empty ranking and the caller falls back (Ray Serve retries with
backoff, which is the back-pressure we want).
"""

from __future__ import annotations

from typing import Protocol

from cluster.routing.candidates import Candidate
from cluster.routing.view import is_routable


class Filter(Protocol):
    name: str

    def filter(self, candidates: list[Candidate]) -> list[Candidate]: ...


class HealthyFilter:
    """Drop replicas that report themselves unhealthy or draining.

    The view already leaves unhealthy replicas out of sampling; this filter states
    the rule in the chain, so a policy fed candidates some other way (a custom
    sampler, the simulator) still never routes to a replica that said it cannot
    serve. Replicas without stats pass: Ray Serve lists only running replicas, and
    starving a fresh replica until its first report would slow scale-up.
    """

    name = "healthy"

    def filter(self, candidates: list[Candidate]) -> list[Candidate]:
        return [c for c in candidates if c.stats is None or is_routable(c.stats)]


class LoadCapFilter:
    """Drop replicas whose load exceeds a hard cap.

    Trade-off: a cap turns overload into fast rejection/backoff at the router
    instead of unbounded queueing inside one engine, at the cost of refusing work a
    replica might have finished in time. Off by default because Ray Serve's
    max_ongoing_requests already bounds each replica.
    """

    name = "load_cap"

    def __init__(self, load_cap: int) -> None:
        self.load_cap = load_cap

    def filter(self, candidates: list[Candidate]) -> list[Candidate]:
        return [c for c in candidates if c.load <= self.load_cap]


class SpreadFilter:
    """Hot-adapter spreading: drop candidates much busier than the least-loaded one.

    Keeps a candidate iff `load <= max(min_load + spread_threshold, min_load *
    spread_ratio)`, where min_load is the lowest load among the candidates. The
    least-loaded candidate always stays, so this never empties the list.

    Why a filter and not only the load scorer: the residency score rightly pulls an
    adapter's requests to the replica that holds it, and for a hot adapter that pull
    never stops, so the holder's queue would grow until the load score outweighed
    the residency gap, a point that moves with every weight change. The filter makes
    the limit explicit and independent of weights: once the holder is more than
    `spread_threshold` requests (and `spread_ratio` times) above the least-loaded
    candidate, the next request goes elsewhere, that replica loads the adapter and
    becomes a holder too, and the hot adapter ends up served by several replicas.
    The ratio keeps residency winning when every replica is queueing (min_load high),
    where a few more queued requests cost less than an adapter load.

    It applies to every candidate, not only holders: a non-holder that far above the
    minimum would lose on load anyway, and base-model requests get the same bound.
    """

    name = "spread"

    def __init__(self, spread_threshold: float, spread_ratio: float = 1.0) -> None:
        self.spread_threshold = spread_threshold
        self.spread_ratio = spread_ratio

    def filter(self, candidates: list[Candidate]) -> list[Candidate]:
        if not candidates:
            return candidates
        min_load = min(c.load for c in candidates)
        limit = max(min_load + self.spread_threshold, min_load * self.spread_ratio)
        return [c for c in candidates if c.load <= limit]


class SlotWaitFilter:
    """Queue at the fleet rather than behind, or onto, a replica whose LoRA slots are
    all busy.

    Drops every candidate whose slots are all taken by other adapters' in-flight
    requests (`Candidate.slot_wait`, from the router's own per-adapter count). When
    that leaves nobody, the ranking is empty and the request waits at the router:
    the simulator retries it whenever a request finishes; Ray Serve's router retries
    a request its policy ranked no replica for, with backoff, as it does for a fleet
    at max_ongoing_requests. Waiting is bounded: once a request has waited the
    policy's patience (RoutingSettings.slot_wait_patience_s) it is ranked without
    this filter, so in a deep overload it still goes somewhere.

    Why: vLLM runs at most max_loras adapters in a batch, so a request sent to such a
    replica waits there until one of those adapters has no request left, which
    takes seconds when they keep getting requests, and it cannot move once sent. At
    the router it goes to the first replica that frees a slot, or that runs its
    adapter. A replica with a free slot elsewhere still takes it (a store read
    there beats an unbounded wait for a slot): that is the slot scorer's rule,
    made hard.
    """

    name = "slot_wait"
    patient = True  # ChainPolicy skips it once a request has waited its patience_s

    def filter(self, candidates: list[Candidate]) -> list[Candidate]:
        return [c for c in candidates if not c.slot_wait]
