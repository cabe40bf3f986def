"""The replica-stats contract: what every engine replica reports about itself.

Replicas publish this (as a plain dict, see `to_dict`) through Ray Serve's
`record_routing_stats()`; the router and the placement controller read it back with
`ReplicaStats.from_dict`. One dataclass, so both sides agree on every field.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import Enum


class Tier(str, Enum):
    """Where an adapter sits on a replica, fastest first."""

    GPU = "gpu"  # in one of the engine's LoRA slots (vLLM max_loras): no load needed
    CPU = "cpu"  # in the engine's host-memory cache (max_cpu_loras): a copy into a slot
    LOADING = "loading"  # being read from the store right now
    ABSENT = "absent"  # must be read from the store (node disk / object storage)


@dataclass(frozen=True)
class ReplicaStats:
    replica_id: str
    node_id: str = ""
    gpu_slots: int = 0
    cpu_slots: int = 0
    gpu_resident: tuple[str, ...] = ()
    cpu_resident: tuple[str, ...] = ()
    loading: tuple[str, ...] = ()
    queue_len: int = 0
    running: int = 0
    kv_cache_usage: float = 0.0
    per_adapter_requests: dict[str, int] = field(default_factory=dict)
    per_adapter_tokens: dict[str, int] = field(default_factory=dict)
    adapter_loads: int = 0
    generated_tokens: int = 0  # tokens generated for finished requests since the replica started
    desired: tuple[str, ...] = ()  # what the placement controller last asked this replica to hold
    unloadable: tuple[str, ...] = ()  # asked for but could not be loaded (deleted, corrupted): do not plan them
    healthy: bool = True
    draining: bool = False  # being removed (scale-down): takes no new requests, finishes what it has
    pid: int = 0  # the replica's process on its node: for operators, and fault injection in tests
    started_at: float = 0.0  # unix time the replica's constructor began (recovery-time breakdown)
    ready_at: float = 0.0  # unix time its engine was serving
    base: str = ""  # the base model it serves (its served name): each base's replicas are planned and routed apart
    ts: float = field(default_factory=time.time)

    def tier_of(self, adapter: str) -> Tier:
        if adapter in self.gpu_resident:
            return Tier.GPU
        if adapter in self.cpu_resident:
            return Tier.CPU
        if adapter in self.loading:
            return Tier.LOADING
        return Tier.ABSENT

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("gpu_resident", "cpu_resident", "loading", "desired", "unloadable"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ReplicaStats":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("gpu_resident", "cpu_resident", "loading", "desired", "unloadable"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
