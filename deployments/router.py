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
import time
from typing import Any

from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

from cluster.routing.inflight import InflightTracker
from cluster.routing.registry import make_policy
from cluster.routing.settings import RoutingSettings
from cluster.routing.view import ClusterView
from cluster.stats import ReplicaStats
from deployments import metrics

logger = logging.getLogger(__name__)

ROUTER_CLASS_PATH = "deployments.router:AdapterAwareRouter"


def _without_avoided(replicas: list[RunningReplica], pending_request: PendingRequest | None) -> list[RunningReplica]:
    """Drop the replica a retried request names in `avoid_replica` (the ingress's retry
    after that replica died), unless it is the only one left. Matched by replica id or
    Ray actor id: the ingress knows one or the other, depending on what died."""
    avoid = pending_request.kwargs.get("avoid_replica") if pending_request is not None else None
    if not avoid:
        return replicas
    kept = [r for r in replicas if avoid not in (r.replica_id.unique_id, _actor_hex(r))]
    return kept or replicas


def _actor_hex(replica: RunningReplica) -> str | None:
    try:
        return replica.actor_id.hex()
    except Exception:  # noqa: BLE001 - a replica wrapper without an actor (tests): no match
        return None


class AdapterAwareRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, policy: str = "adapter_affinity", settings: dict[str, Any] | None = None, **_: Any) -> None:
        self._policy = make_policy(policy, RoutingSettings(**(settings or {})))
        self._inflight = InflightTracker()
        self._routed: dict[str, tuple[str, str]] = {}  # internal request id -> (replica id, adapter)
        self._rng = random.Random()
        self._view = ClusterView()
        self._view_key: tuple = ()
        self._decisions = metrics.DecisionRecorder(self._policy.name)
        logger.info("lorafleet router: policy %s", policy)

    def _current_view(self, replicas: list[RunningReplica]) -> ClusterView:
        """The policy's view of the replicas; rebuilt only when a replica's stats changed."""
        key = tuple((r.replica_id.unique_id, r.routing_stats.get("ts")) for r in replicas)
        if key != self._view_key:
            stats, no_stats, placement = [], [], {}
            for replica in replicas:
                rid = replica.replica_id.unique_id
                if replica.routing_stats:
                    replica_stats = ReplicaStats.from_dict({**replica.routing_stats, "replica_id": rid})
                    stats.append(replica_stats)
                    # The placement controller's plan reaches routers through the replicas
                    # that were told to hold each adapter: no extra channel, same staleness.
                    for adapter in replica_stats.desired:
                        placement.setdefault(adapter, []).append(rid)
                else:
                    no_stats.append(rid)
            self._view = ClusterView(stats, no_stats=no_stats, placement=placement)
            self._view_key = key
        return self._view

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        started = time.perf_counter()
        adapter = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        candidate_replicas = _without_avoided(candidate_replicas, pending_request)
        view = self._current_view(candidate_replicas)
        # how long this request has waited at the router: a policy may hold it back for
        # a replica with a free LoRA slot only so long (RoutingSettings.slot_wait_patience_s)
        created = getattr(pending_request, "created_at", None)
        waited_s = max(0.0, time.time() - created) if created is not None else 0.0
        ranked = self._policy.rank(adapter or None, view, self._inflight, self._rng, waited_s)
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        chosen = [[by_id[rid]] for rid in ranked if rid in by_id]
        tier = view.residency(adapter or None, chosen[0][0].replica_id.unique_id).value if chosen else metrics.NO_REPLICA
        self._decisions.record(tier, time.perf_counter() - started)
        return chosen

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result) -> None:
        rid, adapter = replica_id.unique_id, pending_request.metadata.multiplexed_model_id
        self._routed[pending_request.metadata.internal_request_id] = (rid, adapter)
        self._inflight.on_assign(rid, adapter)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        # Ray also reports completions of requests a replica refused (never routed):
        # only a routed request's completion frees what on_request_routed counted.
        routed = self._routed.pop(internal_request_id, None)
        if routed is not None:
            self._inflight.on_finish(*routed)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        dead = replica_id.unique_id
        self._inflight.forget(dead)
        for request_id in [k for k, (rid, _) in self._routed.items() if rid == dead]:
            del self._routed[request_id]
