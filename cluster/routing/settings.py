"""The routing policy's knobs, with defaults an operator can start from.

One flat frozen dataclass with simple field names, so the pydantic config model in
`deployments/` can mirror it field for field (and YAML stays flat). Frozen because a
policy is built from it once; changing a knob means building a new policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.routing.candidates import Residency


@dataclass(frozen=True)
class RoutingSettings:
    """Knobs of the `adapter_affinity` policy (and `sample_k` for `random`).

    Weights (each scorer's [0, 1] score is multiplied by its weight; total = sum):
      weight_residency  -- adapter residency tier (see ResidencyScorer). Default 1.0.
      weight_load       -- load relative to the least-loaded candidate. Default 1.0.
      weight_kv         -- KV-cache headroom. Default 0.5: KV pressure matters less
                           than load because vLLM bounds it itself (it preempts).
      weight_placement  -- the placement controller's hint. Default 0.25: enough to
                           send a cold adapter to the replica about to hold it, not
                           enough to beat a replica that already holds it or can run
                           it now. It was 0.5 until the slot scorer existed; in the
                           simulator (bench/README.md) 0.5 pulled requests to planned
                           replicas whose slots were busy.
      weight_home       -- a cold adapter's stable home (HomeScorer, rendezvous
                           hash). Default 0.25: splits the unheld tail into disjoint
                           per-replica shares instead of churning every cache;
                           ~3 requests of extra load on the home or a free slot
                           elsewhere (tier gap 0.3) beat it. Neutral when the
                           controller plans the adapter somewhere (its plan wins).
      weight_slots      -- avoid a replica whose LoRA slots are all busy with other
                           adapters' running requests (SlotScorer). Default 1.0, as
                           much as residency: a store read elsewhere costs far less
                           than waiting for a slot to drain. Chosen in the
                           simulator over 0.5 (bench/README.md).

    Residency tier scores (see ResidencyScorer for why each):
      tier_gpu 1.0, tier_cpu 0.7, tier_loading 0.65, tier_free_slot 0.6,
      tier_needs_eviction 0.3, tier_unknown 0.2.

    Load:
      load_scale        -- in-flight requests above the least-loaded candidate that
                           halve the load score (LoadScorer). Default 8.0.
      spread_threshold  -- hot-adapter spreading (SpreadFilter): a candidate whose
                           load exceeds the least-loaded candidate's by more than
                           this many requests ...
      spread_ratio      -- ... and is more than this multiple of it, is dropped.
                           Defaults 8 and 1.5: at low load an absolute gap of 8
                           requests decides, at high load the gap must also be 50%.
                           Why not smaller: a vLLM replica runs dozens to hundreds
                           of requests in one continuous batch, so a few more
                           running requests cost little, while every spread costs an
                           adapter load and an eviction elsewhere; the placement
                           controller replicates hot adapters on purpose, this is
                           the router's safety valve. Lower both (e.g. 2-4) for
                           small replicas such as the CPU test engines.
      load_cap          -- hard cap: drop candidates whose load exceeds it; None
                           (default) disables it, since Ray Serve's own
                           max_ongoing_requests already bounds a replica.
      queue_when_slots_busy -- drop replicas whose LoRA slots all run other
                           adapters (SlotWaitFilter); with none left the request
                           waits at the router for a replica with room instead of
                           queueing behind a full batch. Default True (simulator:
                           bench/README.md).
      slot_wait_patience_s -- ... for at most this long; then any replica. Default
                           0.5 s, half the usual 1 s TTFT SLO: without a bound, a
                           fleet short of slots kept requests waiting at the router
                           behind ones nobody could take (simulator: 59% within the
                           SLO against 70% without the filter and 82% with it).

    KV cache:
      kv_threshold      -- usage above which the KV score falls steeply, because
                           vLLM starts preempting near a full cache. Default 0.9.

    Sampling (decision cost is O(sample_k), independent of fleet size):
      sample_k          -- candidates considered when the fleet is larger. 16.
      holders_cap       -- at most this many of them are replicas holding the
                           adapter (or hinted by placement); the rest are a random
                           sample, so a less-loaded non-holder is always on hand to
                           spread a hot adapter to. Default 8. Must be < sample_k.
    """

    weight_residency: float = field(default=1.0, metadata={"description": 'Weight of the adapter-residency tier score.'})
    weight_load: float = field(default=1.0, metadata={"description": 'Weight of the load score (in-flight relative to the least-loaded candidate).'})
    weight_kv: float = field(default=0.5, metadata={"description": 'Weight of the KV-cache headroom score.'})
    weight_placement: float = field(default=0.25, metadata={"description": "Weight of the placement controller's hint."})
    weight_home: float = field(default=0.25, metadata={"description": "Weight of the adapter's stable home replica (rendezvous hash), which splits the cold tail across replicas."})
    weight_slots: float = field(default=1.0, metadata={"description": "Weight of avoiding a replica whose LoRA slots are all busy running other adapters."})

    tier_gpu: float = field(default=1.0, metadata={"description": 'Residency score when the adapter is in a GPU slot.'})
    tier_cpu: float = field(default=0.7, metadata={"description": 'Residency score when the adapter is in the CPU cache.'})
    tier_loading: float = field(default=0.65, metadata={"description": 'Residency score when the adapter is being loaded.'})
    tier_free_slot: float = field(default=0.6, metadata={"description": 'Residency score when the adapter is absent but a GPU slot is free.'})
    tier_needs_eviction: float = field(default=0.3, metadata={"description": 'Residency score when loading the adapter would evict another.'})
    tier_unknown: float = field(default=0.2, metadata={"description": 'Residency score for a replica without stats yet.'})

    load_scale: float = field(default=8.0, metadata={"description": 'In-flight requests above the least-loaded candidate that halve the load score.'})
    spread_threshold: int = field(default=8, metadata={"description": 'Hot-adapter spreading: drop a candidate more than this many requests busier than the least-loaded one...'})
    spread_ratio: float = field(default=1.5, metadata={"description": '...and more than this multiple of its load.'})
    load_cap: int | None = field(default=None, metadata={"description": 'Drop candidates whose load exceeds this (null: off).'})
    queue_when_slots_busy: bool = field(default=True, metadata={"description": "Wait at the router rather than send a request to a replica whose LoRA slots all run other adapters."})
    slot_wait_patience_s: float = field(default=0.5, metadata={"description": "...for at most this long (seconds at the router); then any replica may take it."})

    kv_threshold: float = field(default=0.9, metadata={"description": 'KV-cache usage above which the KV score falls steeply.'})

    sample_k: int = field(default=16, metadata={"description": 'Candidates considered per decision in a larger fleet (keeps a decision O(k)).'})
    holders_cap: int = field(default=8, metadata={"description": 'At most this many sampled candidates are replicas holding the adapter (< sample_k).'})

    def __post_init__(self) -> None:
        for name in ("weight_residency", "weight_load", "weight_kv", "weight_placement", "weight_home", "weight_slots"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "tier_gpu",
            "tier_cpu",
            "tier_loading",
            "tier_free_slot",
            "tier_needs_eviction",
            "tier_unknown",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.load_scale <= 0:
            raise ValueError(f"load_scale must be > 0, got {self.load_scale}")
        if self.spread_threshold < 0:
            raise ValueError(f"spread_threshold must be >= 0, got {self.spread_threshold}")
        if self.spread_ratio < 1.0:
            raise ValueError(f"spread_ratio must be >= 1, got {self.spread_ratio}")
        if self.slot_wait_patience_s < 0:
            raise ValueError(f"slot_wait_patience_s must be >= 0, got {self.slot_wait_patience_s}")
        if self.load_cap is not None and self.load_cap < 0:
            raise ValueError(f"load_cap must be >= 0 or None, got {self.load_cap}")
        if not 0.0 < self.kv_threshold < 1.0:
            raise ValueError(f"kv_threshold must be in (0, 1), got {self.kv_threshold}")
        if self.sample_k < 2:
            raise ValueError(f"sample_k must be >= 2, got {self.sample_k}")
        if not 0 <= self.holders_cap < self.sample_k:
            raise ValueError(
                f"holders_cap must be in [0, sample_k), got {self.holders_cap} "
                f"with sample_k={self.sample_k}"
            )

    def tier_scores(self) -> dict[Residency, float]:
        """The residency tier table as the ResidencyScorer takes it."""
        return {
            Residency.GPU: self.tier_gpu,
            Residency.CPU: self.tier_cpu,
            Residency.LOADING: self.tier_loading,
            Residency.FREE_SLOT: self.tier_free_slot,
            Residency.NEEDS_EVICTION: self.tier_needs_eviction,
            Residency.UNKNOWN: self.tier_unknown,
        }
