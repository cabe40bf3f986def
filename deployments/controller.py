"""The fleet controller: the one place that knows every replica's latest stats.

A single-replica Ray Serve deployment (Serve restarts it if it dies). Engine replicas
push their stats to it every `report_period_s` (a replica that dies simply stops
reporting and ages out); the ingress reads the fleet snapshot from it for
`/fleet/replicas` and benchmarks. It holds no state that replicas cannot rebuild: a
restarted controller is complete again after one report period.
"""

from __future__ import annotations

import time

from ray import serve

from cluster.stats import ReplicaStats

# A replica silent for this many report periods is considered gone.
STALE_AFTER_PERIODS = 5


@serve.deployment(name="FleetController", num_replicas=1, max_ongoing_requests=1000)
class FleetController:
    def __init__(self, report_period_s: float = 1.0):
        self.report_period_s = report_period_s
        self._replicas: dict[str, ReplicaStats] = {}
        self._received_at: dict[str, float] = {}

    async def report(self, stats: dict) -> None:
        replica = ReplicaStats.from_dict(stats)
        self._replicas[replica.replica_id] = replica
        self._received_at[replica.replica_id] = time.monotonic()

    def _live(self) -> list[ReplicaStats]:
        cutoff = time.monotonic() - STALE_AFTER_PERIODS * self.report_period_s
        for rid in [rid for rid, at in self._received_at.items() if at < cutoff]:
            del self._replicas[rid], self._received_at[rid]
        return [self._replicas[rid] for rid in sorted(self._replicas)]

    async def snapshot(self) -> list[dict]:
        return [s.to_dict() for s in self._live()]
