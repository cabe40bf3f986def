"""The autoscaler's knobs and the replica it sizes the fleet in.

Both are flat frozen dataclasses, like `PlacementSettings`, so the config schema in
`deployments/` can mirror them field for field (each field's `description`), and so
the decision stays a pure function of (snapshot, profile, settings, state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AutoscalingSettings:
    """Knobs of lorafleet's adapter-aware autoscaler (`cluster.autoscaling.decide`).

    Bounds and cadence:
      min_replicas, max_replicas -- the fleet stays within these.
      period_s          -- a new decision at most this often; calls in between
                           return the last one (Ray Serve calls a custom policy
                           every control-loop tick, ~0.1 s). Default 5 s, the
                           placement controller's planning period.
      startup_s         -- how long a replica asked for now takes to serve: the
                           look-ahead of the demand forecast. Default 50 s (a
                           vLLM-cpu replica here; GPUs: the model's load time).

    Sizing (what one replica can take while meeting the TTFT SLO):
      ttft_slo_s        -- the SLO. Default 1 s.
      target_batch_fraction -- plan compute for batches this full (of
                           max_num_seqs). Default 0.8: the rest absorbs Poisson
                           bursts, so a request finds a free seat within the SLO.
      slot_utilization  -- the working set may occupy this share of the fleet's
                           LoRA slots on average. Default 0.9. A request whose
                           adapter is not running on its replica needs a free
                           slot there (else it waits for another adapter to
                           drain, seconds), which argues for headroom; but the
                           estimate of busy slots (Poisson, each adapter on its
                           own copies) is on the high side. Chosen on a
                           development scenario that is not one of the
                           benchmarks (1,000 adapters, 60 req/s, 8 slots): 0.7 /
                           0.8 / 0.9 / 1.0 gave 34 / 31 / 28.5 / 26 replicas, all
                           >= 99.9% within the SLO; 0.9 keeps a margin.
      host_utilization  -- the share of host-memory slots the adapters that must
                           stay warm may fill (only when store reads are slow,
                           see read_slo_fraction). Default 0.5: the warm set needs
                           room besides itself, for the hot adapters' extra GPU
                           copies, the planner's reserve slots and the adapters
                           routing loads on demand. On the slow-store development
                           scenario (1,000 adapters, 60 req/s, reads 0.5-2 s, not
                           a benchmark): 0.9 / 0.6 / 0.5 gave 36 / 54 / 65
                           replicas and 86.9% / 98.2% / 99.0% of requests within
                           the SLO.
      read_slo_fraction -- an adapter whose store read takes more than this share
                           of the SLO must be warm in host memory before its
                           requests come. Default 0.5.
      miss_budget       -- share of requests allowed to find their adapter cold
                           when reads are that slow. Default 0.005 (half of a
                           99% SLO target).

    Reacting:
      demand_lag_s      -- how far the demand estimate lags the true rate on a
                           ramp (an EWMA with half-life h lags by h / ln 2).
                           Default 43 s, for the placement controller's 30 s.
      trend_half_life_s -- half-life of the smoothed trend of total demand.
                           Default 60 s.
      downscale_delay_s -- the fleet must have been too large for this long
                           before it shrinks. Default 60 s: longer than a
                           demand-estimate half-life, so one quiet minute in a
                           steady load does not remove capacity the next one needs.
      downscale_margin  -- shrink only to ceil(need x (1 + margin)). Default 0.1:
                           a fleet on the edge of the need stays put (no flapping).
      max_downscale_fraction -- at most this share of the replicas (at least one)
                           starts draining per decision. Default 0.1.
      queue_slo_fraction -- requests waiting for a replica beyond what the fleet
                           starts within this share of the SLO add replicas
                           (one per batch's worth). Default 0.5.
    """

    min_replicas: int = field(default=1, metadata={"description": "Fewest replicas."})
    max_replicas: int = field(default=64, metadata={"description": "Most replicas."})
    period_s: float = field(default=5.0, metadata={"description": "A new scaling decision at most this often, in seconds."})
    startup_s: float = field(default=50.0, metadata={"description": "How long a new replica takes to serve, in seconds: the forecast's look-ahead."})
    ttft_slo_s: float = field(default=1.0, metadata={"description": "The time-to-first-token SLO the fleet is sized for, in seconds."})
    target_batch_fraction: float = field(default=0.8, metadata={"description": "Plan compute for batches this full (share of max_num_seqs)."})
    slot_utilization: float = field(default=0.9, metadata={"description": "Share of the fleet's LoRA slots the working set may occupy on average."})
    host_utilization: float = field(default=0.5, metadata={"description": "Share of host-memory adapter slots the must-be-warm adapters may fill."})
    read_slo_fraction: float = field(default=0.5, metadata={"description": "Adapters whose store read exceeds this share of the SLO must stay warm in host memory."})
    miss_budget: float = field(default=0.005, metadata={"description": "Share of requests allowed to find a slow-to-read adapter cold."})
    demand_lag_s: float = field(default=43.0, metadata={"description": "How far the demand estimate lags the true rate on a ramp, in seconds."})
    trend_half_life_s: float = field(default=60.0, metadata={"description": "Half-life of the smoothed trend of total demand, in seconds."})
    downscale_delay_s: float = field(default=60.0, metadata={"description": "The fleet must be too large for this long before it shrinks, in seconds."})
    downscale_margin: float = field(default=0.1, metadata={"description": "Shrink only to ceil(need x (1 + margin))."})
    max_downscale_fraction: float = field(default=0.1, metadata={"description": "At most this share of replicas (at least one) starts draining per decision."})
    queue_slo_fraction: float = field(default=0.5, metadata={"description": "Waiting requests beyond what the fleet starts within this share of the SLO add replicas."})

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas and max_replicas >= 1, got {self.min_replicas}, {self.max_replicas}")
        for name in ("period_s", "ttft_slo_s", "trend_half_life_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("startup_s", "demand_lag_s", "downscale_delay_s", "downscale_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("target_batch_fraction", "slot_utilization", "host_utilization", "max_downscale_fraction",
                     "read_slo_fraction", "queue_slo_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0 <= self.miss_budget < 1:
            raise ValueError(f"miss_budget must be in [0, 1), got {self.miss_budget}")

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AutoscalingSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown autoscaling keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ReplicaProfile:
    """One engine replica, as far as sizing the fleet needs it: batch and slot
    sizes, and what a step costs (the simulator's CostModel fields of the same
    names; live, the calibrated cost model of the engine, bench/README.md).

    A step with b sequences, LoRA work of `adapters` distinct adapters and
    `lora_seqs` LoRA sequences (both in units of relative LoRA cost,
    `cluster.lora_cost`) takes step_base_s + step_per_seq_s * b +
    step_per_adapter_s * adapters + step_per_lora_seq_s * lora_seqs.
    """

    max_num_seqs: int = 64
    gpu_slots: int = 8
    cpu_slots: int = 32
    step_base_s: float = 0.02276
    step_per_seq_s: float = 0.000238
    step_per_adapter_s: float = 0.002
    step_per_lora_seq_s: float = 0.0
    prefill_per_token_s: float = 0.0001
    store_load_s: float = 0.15
    cpu_to_gpu_s: float = 0.01

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.gpu_slots < 1 or self.cpu_slots < self.gpu_slots:
            raise ValueError("need max_num_seqs >= 1, gpu_slots >= 1 and cpu_slots >= gpu_slots")
        if self.step_base_s + self.step_per_seq_s <= 0:
            raise ValueError("a decode step must take some time")

    def step_s(self, batch: float, adapters: float, lora_seqs: float) -> float:
        return (
            self.step_base_s
            + self.step_per_seq_s * batch
            + self.step_per_adapter_s * adapters
            + self.step_per_lora_seq_s * lora_seqs
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> ReplicaProfile:
        """From a cost model's fields (e.g. `CostModel.to_dict()` or its JSON file);
        keys this profile does not use are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]
