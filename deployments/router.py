"""Ray Serve glue for the adapter-aware routing policy in `cluster.routing`.

Runs inside every caller of the engine deployment (the ingress). It translates Ray's
`RunningReplica`s into the policy's `ReplicaStats` view, asks the pure policy for a
ranking, and hands Ray one replica per rank (Ray re-orders replicas *within* a rank
by probed queue length, which would undo the policy's choice). It also counts its own
in-flight requests per replica, because replica stats arrive only every
`routing.stats_period_s`.

Plugged in with `RequestRouterConfig(request_router_class="deployments.router:AdapterAwareRouter")`
by `build_app`; nothing here blocks the event loop.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

from cluster.routing.inflight import InflightTracker
from cluster.routing.registry import make_policy
from cluster.routing.settings import RoutingSettings
from cluster.routing.view import ClusterView
from cluster.stats import ReplicaStats

logger = logging.getLogger(__name__)

ROUTER_CLASS_PATH = "deployments.router:AdapterAwareRouter"


class AdapterAwareRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, policy: str = "adapter_affinity", settings: dict[str, Any] | None = None, **_: Any) -> None:
        self._policy = make_policy(policy, RoutingSettings(**(settings or {})))
        self._inflight = InflightTracker()
        self._rng = random.Random()
        self._view = ClusterView()
        self._view_key: tuple = ()
        logger.info("lorafleet router: policy %s", policy)

    def _current_view(self, replicas: list[RunningReplica]) -> ClusterView:
        """The policy's view of the replicas; rebuilt only when a replica's stats changed."""
        key = tuple((r.replica_id.unique_id, r.routing_stats.get("ts")) for r in replicas)
        if key != self._view_key:
            stats, no_stats = [], []
            for replica in replicas:
                rid = replica.replica_id.unique_id
                if replica.routing_stats:
                    stats.append(ReplicaStats.from_dict({**replica.routing_stats, "replica_id": rid}))
                else:
                    no_stats.append(rid)
            self._view = ClusterView(stats, no_stats=no_stats)
            self._view_key = key
        return self._view

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        adapter = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        view = self._current_view(candidate_replicas)
        ranked = self._policy.rank(adapter or None, view, self._inflight, self._rng)
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        return [[by_id[rid]] for rid in ranked if rid in by_id]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result) -> None:
        self._inflight.on_assign(replica_id.unique_id)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self._inflight.on_finish(replica_id.unique_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._inflight.forget(replica_id.unique_id)
