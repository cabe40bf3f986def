"""Ray Serve glue for the adapter-aware routing policy in `cluster.routing`.

Runs inside every caller of the engine deployment (the ingress). It translates Ray's
`RunningReplica`s into the policy's `ReplicaStats` view, asks the pure policy for a
ranking, and hands Ray one replica per rank (Ray re-orders replicas *within* a rank
by probed queue length, which would undo the policy's choice). It also counts its own
in-flight requests per replica, because replica stats arrive only every
`routing.stats_period_s`.

Per decision the glue does O(1) work besides the policy's own O(sample_k): Ray hands
`choose_replicas` the same candidate list object until the replica set or their stats
change, so the view (and the id -> replica map) is rebuilt only then, parsing only the
replicas whose stats changed. A request counts as in flight from the moment the router
*chooses* its replica (a claim), not from when Ray reports it routed: a burst arriving
in one instant would otherwise see the same empty counts and all go to one holder. A
claim Ray never turns into a routed request (cancelled while queued, or routed to
another replica of the ranking) is corrected when Ray reports the routing, or expires
after `CLAIM_TTL_S`.

Plugged in with `RequestRouterConfig(request_router_class="deployments.serve.router:AdapterAwareRouter")`
by `build_app`; nothing here blocks the event loop.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from typing import Any

from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

from cluster.routing.inflight import InflightTracker
from cluster.routing.registry import make_policy
from cluster.routing.settings import RoutingSettings
from cluster.routing.view import ClusterView
from cluster.stats import ReplicaStats
from deployments.observability import metrics

logger = logging.getLogger(__name__)

ROUTER_CLASS_PATH = "deployments.serve.router:AdapterAwareRouter"
CLAIM_TTL_S = 10.0  # a chosen replica Ray has not routed to within this is no longer counted


def _avoided(pending_request: PendingRequest | None) -> str | None:
    """The replica a retried request names in `avoid_replica` (the ingress's retry after
    that replica died): a replica id or a Ray actor id, whichever the ingress knew."""
    return pending_request.kwargs.get("avoid_replica") if pending_request is not None else None


def _actor_hex(replica: RunningReplica) -> str | None:
    try:
        return replica.actor_id.hex()
    except Exception:  # noqa: BLE001 - a replica wrapper without an actor (tests): no match
        return None


class Claims:
    """Requests counted in flight from the router's choice until Ray reports them routed
    (then they are assignments, counted until completion) or they expire unrouted."""

    def __init__(self, inflight: InflightTracker, ttl_s: float = CLAIM_TTL_S, clock=time.monotonic):
        self._inflight = inflight
        self._ttl_s = ttl_s
        self._clock = clock
        self._claims: OrderedDict[str, tuple[str, str, float]] = OrderedDict()  # request -> (replica, adapter, at)

    def claim(self, request_id: str, replica_id: str, adapter: str) -> None:
        previous = self._claims.pop(request_id, None)
        if previous is not None:  # chosen again (Ray retries a full replica): move the count
            self._inflight.on_finish(previous[0], previous[1])
        self._claims[request_id] = (replica_id, adapter, self._clock())
        self._inflight.on_assign(replica_id, adapter)

    def routed(self, request_id: str, replica_id: str, adapter: str) -> None:
        """Ray sent the request to `replica_id`: the count stays (or moves there)."""
        claimed = self._claims.pop(request_id, None)
        if claimed is not None and claimed[0] == replica_id:
            return
        if claimed is not None:
            self._inflight.on_finish(claimed[0], claimed[1])
        self._inflight.on_assign(replica_id, adapter)

    def expire(self) -> None:
        """Drop claims Ray never routed (oldest first: O(expired))."""
        cutoff = self._clock() - self._ttl_s
        while self._claims:
            request_id, (replica_id, adapter, at) = next(iter(self._claims.items()))
            if at > cutoff:
                return
            del self._claims[request_id]
            self._inflight.on_finish(replica_id, adapter)

    def forget(self, replica_id: str) -> None:
        for request_id in [r for r, claim in self._claims.items() if claim[0] == replica_id]:
            del self._claims[request_id]

    def __len__(self) -> int:
        return len(self._claims)


class PeerScaledInflight(InflightTracker):
    """This router's in-flight counts, scaled to the whole fleet of routers.

    Each ingress replica runs its own router, and a router sees only the requests it
    chose until replica stats catch up (one stats period): with `peers` ingress
    replicas sharing traffic evenly (Ray's proxies spread requests over them), the
    others have sent about as many to each replica as this one. Counting own x peers
    keeps a burst from piling onto an adapter's holder `peers` times over
    (bench/two_ingress_burst.py); once stats report, `replica_load` takes the larger
    of the two, so nothing is counted twice for long."""

    def __init__(self, peers: int = 1) -> None:
        super().__init__()
        self.peers = max(1, peers)

    def count(self, replica_id: str) -> int:
        return super().count(replica_id) * self.peers


class AdapterAwareRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, policy: str = "adapter_affinity", settings: dict[str, Any] | None = None, base: str = "",
                         peers: int = 1, **_: Any) -> None:
        """`base`: the base model whose engine deployment this router serves (one router
        per deployment: each base's adapters are routed over its own replicas only).
        `peers`: how many routers share the traffic (the ingress replicas)."""
        self._policy = make_policy(policy, RoutingSettings(**(settings or {})))
        self._inflight = PeerScaledInflight(peers)
        self._claims = Claims(self._inflight)
        self._routed: dict[str, tuple[str, str]] = {}  # internal request id -> (replica id, adapter)
        self._rng = random.Random()
        self._view = ClusterView()
        self._view_list: list[RunningReplica] | None = None
        self._by_id: dict[str, RunningReplica] = {}
        self._parsed: dict[str, tuple[Any, ReplicaStats]] = {}  # replica id -> (its stats dict's ts, parsed)
        self._decisions = metrics.DecisionRecorder(self._policy.name, model=base)
        logger.info("lorafleet router: policy %s for base %s", policy, base or "(one base)")

    def _current_view(self, replicas: list[RunningReplica]) -> ClusterView:
        """The policy's view of the replicas. Rebuilt only when Ray hands a new candidate
        list (the replica set or their stats changed); replicas whose stats did not change
        reuse their parsed stats."""
        if replicas is self._view_list:
            return self._view
        stats, no_stats, placement, parsed = [], [], {}, {}
        for replica in replicas:
            rid = replica.replica_id.unique_id
            raw = replica.routing_stats
            if not raw:
                no_stats.append(rid)
                continue
            cached = self._parsed.get(rid)
            if cached is not None and cached[0] == raw.get("ts"):
                replica_stats = cached[1]
            else:
                replica_stats = ReplicaStats.from_dict({**raw, "replica_id": rid})
            parsed[rid] = (raw.get("ts"), replica_stats)
            stats.append(replica_stats)
            # The placement controller's plan reaches routers through the replicas that
            # were told to hold each adapter: no extra channel, same staleness.
            for adapter in replica_stats.desired:
                placement.setdefault(adapter, []).append(rid)
        self._parsed = parsed
        self._view = ClusterView(stats, no_stats=no_stats, placement=placement)
        self._by_id = {r.replica_id.unique_id: r for r in replicas}
        self._view_list = replicas
        return self._view

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        started = time.perf_counter()
        self._claims.expire()
        adapter = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        view = self._current_view(candidate_replicas)
        # how long this request has waited at the router: a policy may hold it back for
        # a replica with a free LoRA slot only so long (RoutingSettings.slot_wait_patience_s)
        created = getattr(pending_request, "created_at", None)
        waited_s = max(0.0, time.time() - created) if created is not None else 0.0
        ranked = self._policy.rank(adapter or None, view, self._inflight, self._rng, waited_s)
        by_id = self._by_id
        avoid = _avoided(pending_request)
        chosen = [[by_id[rid]] for rid in ranked if rid in by_id]
        if avoid:
            kept = [c for c in chosen if avoid not in (c[0].replica_id.unique_id, _actor_hex(c[0]))]
            chosen = kept or chosen  # the avoided replica is the only one left: use it
        if chosen and pending_request is not None:
            self._claims.claim(pending_request.metadata.internal_request_id, chosen[0][0].replica_id.unique_id, adapter)
        tier = view.residency(adapter or None, chosen[0][0].replica_id.unique_id).value if chosen else metrics.NO_REPLICA
        self._decisions.record(tier, time.perf_counter() - started)
        return chosen

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result) -> None:
        rid, adapter = replica_id.unique_id, pending_request.metadata.multiplexed_model_id
        request_id = pending_request.metadata.internal_request_id
        self._routed[request_id] = (rid, adapter)
        self._claims.routed(request_id, rid, adapter)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        # Ray also reports completions of requests a replica refused (never routed):
        # only a routed request's completion frees what it counted.
        routed = self._routed.pop(internal_request_id, None)
        if routed is not None:
            self._inflight.on_finish(*routed)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        dead = replica_id.unique_id
        self._inflight.forget(dead)
        self._claims.forget(dead)
        for request_id in [k for k, (rid, _) in self._routed.items() if rid == dead]:
            del self._routed[request_id]
