"""Scorers: each rates every candidate in [0, 1] on one concern.

The policy clamps each score to [0, 1], multiplies it by the scorer's weight and sums;
the highest total wins. A scorer sees the whole candidate list at once because some
scores are relative (load is judged against the least-loaded candidate). Each is
O(n) in the number of candidates.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from cluster.routing.candidates import Candidate, Residency


class Scorer(Protocol):
    name: str

    def score(self, candidates: Sequence[Candidate]) -> list[float]: ...


class ResidencyScorer:
    """Prefer replicas where the request's adapter is closest to running.

    Default tier table (RoutingSettings.tier_*):

    | residency      | score | why                                                        |
    |----------------|-------|------------------------------------------------------------|
    | GPU            | 1.0   | in a LoRA slot: runs in the next step, no copy, no eviction |
    | CPU            | 0.7   | in host memory: a host-to-device copy (milliseconds) and it |
    |                |       | takes a slot, possibly evicting another adapter            |
    | LOADING        | 0.65  | a read from the store is under way: wait for the rest of it,|
    |                |       | but no second read of the same adapter elsewhere           |
    | FREE_SLOT      | 0.6   | not here: a full read from the store, but no eviction      |
    | NEEDS_EVICTION | 0.3   | not here and slots full: a full read plus evicting an      |
    |                |       | adapter other requests may want again (churn)              |
    | UNKNOWN        | 0.2   | no stats yet: could be anything, so below every known tier;|
    |                |       | above 0 so a fresh replica still wins when others are busy |
    | BASE           | 1.0   | base-model request: residency does not matter, every       |
    |                |       | replica gets the same score, so load decides               |

    The gaps matter more than the values: GPU - CPU (0.3) and CPU/LOADING - FREE_SLOT
    are small next to FREE_SLOT - NEEDS_EVICTION (0.3) because a store read is the
    cost that dominates, while a host-to-device copy is cheap. With the default
    weights and load_scale 8, a CPU holder beats an equally healthy GPU holder once
    it carries ~4 fewer requests, and a GPU holder would stay preferred over an idle
    replica that needs an eviction up to ~18 more requests, but the SpreadFilter
    (spread_threshold 8) moves the adapter before that: within the spread band
    residency dominates, load mostly orders replicas of the same tier.
    """

    name = "residency"

    def __init__(self, tier_scores: Mapping[Residency, float]) -> None:
        self.tier_scores = dict(tier_scores)
        self.tier_scores[Residency.BASE] = 1.0

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        table = self.tier_scores
        return [table[c.residency] for c in candidates]


class LoadScorer:
    """Prefer less-loaded replicas, judged against the least-loaded candidate.

    score = 1 / (1 + (load - min_load) / load_scale), with load as in
    `replica_load` (max of the router's in-flight count and running + queue_len).

    Why this shape and not the min-max form `1 - (load - min) / (max - min)`: the
    min-max form depends on the most-loaded candidate and jumps to 0 for a gap of a
    single request when loads are {0, 1}, so one request of difference would outweigh
    any residency gap and an adapter would never stay where it is resident. Here the
    score depends only on the absolute gap to the best candidate: the least-loaded
    gets 1.0, `load_scale` requests more gets 0.5, 3 x load_scale gets 0.25, smoothly.
    """

    name = "load"

    def __init__(self, load_scale: float = 8.0) -> None:
        if load_scale <= 0:
            raise ValueError("load_scale must be > 0")
        self.load_scale = load_scale

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        min_load = min(c.load for c in candidates)
        scale = self.load_scale
        return [1.0 / (1.0 + (c.load - min_load) / scale) for c in candidates]


class KVCacheScorer:
    """Prefer replicas with KV-cache headroom; avoid ones about to preempt.

    Piecewise linear in usage u with a knee at `kv_threshold` (t, default 0.9):
      u <= t:  1 - 0.5 * u / t          (1.0 when empty, 0.5 at the knee)
      u >  t:  0.5 * (1 - u) / (1 - t)  (0.5 at the knee, 0.0 when full)

    Why a knee: vLLM fills its KV cache by design (and prefix caching keeps blocks
    around), so moderate usage says little about the next request's latency; near
    full, vLLM preempts running requests and recomputes them, which is expensive for
    everyone on the replica. So usage below the knee costs little and above it the
    score falls ~9x faster. Replicas without stats get 0.5 (no evidence either way).
    """

    name = "kv_cache"
    unknown_score = 0.5

    def __init__(self, kv_threshold: float = 0.9) -> None:
        if not 0.0 < kv_threshold < 1.0:
            raise ValueError("kv_threshold must be in (0, 1)")
        self.kv_threshold = kv_threshold

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        return [self._one(c) for c in candidates]

    def _one(self, c: Candidate) -> float:
        if c.stats is None:
            return self.unknown_score
        u = min(1.0, max(0.0, c.stats.kv_cache_usage))
        t = self.kv_threshold
        if u <= t:
            return 1.0 - 0.5 * u / t
        return 0.5 * (1.0 - u) / (1.0 - t)


class PlacementScorer:
    """Prefer replicas the placement controller wants to hold the adapter: 1.0 if
    the replica is in the adapter's desired set, else 0.0.

    Why: the controller replicates hot adapters and warms cold ones ahead of demand;
    following its table sends a cold adapter's first request to the replica about to
    load it anyway (one load instead of two) and keeps router and controller from
    fighting. Its weight is kept below the residency gap so an adapter already
    resident elsewhere is still served there. With no table (or a base-model
    request) every candidate gets 0, so it does not change the ranking.
    """

    name = "placement"

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        return [1.0 if c.desired else 0.0 for c in candidates]


class SlotScorer:
    """Avoid replicas whose LoRA slots are all taken by other adapters' running
    requests: 0.0 there, 1.0 elsewhere (and for base-model requests).

    Why: vLLM runs at most `max_loras` distinct adapters in one batch. A request for
    another adapter is skipped by the scheduler until one of those adapters has no
    request left, and as long as new requests for them keep arriving that can take
    many decode steps, far longer than a store read. Residency alone cannot see it
    (the adapter may sit in a slot that the running batch will not give up), and
    load alone cannot either (a replica with 3 requests of 2 other adapters is
    "lightly loaded" but closed to a third adapter). Which adapters are running
    comes from the router's own in-flight count per adapter (`InflightTracker`):
    exact for the requests this router sent, blind to other routers' until stats
    catch up. With the default weight (1.0) even a replica that must evict an idle
    adapter to read this one (needs_eviction 0.3 + 1.0) beats a holder whose slots
    are busy (gpu 1.0 + 0.0) at equal load, and among holders the one that can run
    it now wins.
    """

    name = "slots"

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        return [0.0 if c.slot_wait else 1.0 for c in candidates]


class HomeScorer:
    """Decide where an adapter that no candidate holds gets loaded: its stable home.

    When no candidate has the adapter in any tier (GPU, CPU or loading) and the
    placement controller plans it on none of them, the candidate that ranks first by
    rendezvous hash of (adapter, replica id) gets 1.0 and the rest 0.0. When some
    candidate holds it, every candidate gets 0.0 and residency decides as usual;
    when the controller plans it somewhere, its plan is the home (PlacementScorer).

    Why: most adapters in a long tail are held nowhere, so residency ties and load
    alone decides, which sends a cold adapter to a different replica each time and
    makes every replica's cache churn through the whole tail (measured live: ~700
    store reads per 1,000 requests on 3 replicas). A home per adapter splits the tail
    into disjoint shares, so a tail adapter's next request finds it in its home's
    host cache. Rendezvous hashing keeps homes stable when replicas come and go (only
    the adapters homed on a departed replica move), needs no shared state, and every
    router computes the same home (crc32, not Python's per-process salted `hash`).
    With the default weight (0.25) about three requests of extra load on the home
    outweigh it. Base-model requests get
    0.0 everywhere (neutral).
    """

    name = "home"

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        adapter = candidates[0].adapter
        if not adapter or any(c.residency in _HOLDING or c.desired for c in candidates):
            return [0.0] * len(candidates)
        seed = zlib.crc32(adapter.encode()) << 32
        ranks = [_mix64(seed | zlib.crc32(c.replica_id.encode())) for c in candidates]
        best = max(ranks)
        return [1.0 if r == best else 0.0 for r in ranks]


_HOLDING = frozenset({Residency.GPU, Residency.CPU, Residency.LOADING})
_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finaliser: crc32 alone is linear, so ranking replicas by a bare
    crc32 pair skews homes toward some replicas; this scrambles all 64 bits."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class LlmdLoraAffinityScorer:
    """llm-d's LoRA-affinity tiers, for the baseline comparison only.

    | condition                                   | score |
    |---------------------------------------------|-------|
    | adapter active (here: in a GPU slot)        | 1.0   |
    | a slot is free (resident + loading < slots) | 0.8   |
    | adapter queued (here: loading)              | 0.6   |
    | otherwise (incl. CPU-only, no stats)        | 0.0   |

    llm-d's engine metrics have no host-memory tier, so an adapter in our CPU cache
    scores like an absent one. Base-model requests: 1.0 everywhere (neutral).
    """

    name = "llmd_lora_affinity"

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        return [self._one(c) for c in candidates]

    @staticmethod
    def _one(c: Candidate) -> float:
        if c.residency is Residency.BASE:
            return 1.0
        if c.residency is Residency.GPU:
            return 1.0
        if c.stats is not None and c.free_slot:
            return 0.8
        if c.residency is Residency.LOADING:
            return 0.6
        return 0.0


class LlmdQueueScorer:
    """llm-d's queue scorer, for the baseline comparison only: min-max normalised
    waiting-queue length, (max_q - q) / (max_q - min_q), 1.0 for all when equal.

    It reads only the engine-reported `queue_len`, like llm-d reads scraped metrics,
    and deliberately not the router's in-flight count: that is the comparison's point
    (a replica without stats counts as an empty queue).
    """

    name = "llmd_queue"

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        queues = [c.stats.queue_len if c.stats is not None else 0 for c in candidates]
        if not queues:
            return []
        low, high = min(queues), max(queues)
        if high == low:
            return [1.0] * len(queues)
        return [(high - q) / (high - low) for q in queues]
