"""The Ray Serve router glue: RunningReplica stats in, one replica per rank out.

Uses stand-ins for Ray's RunningReplica / PendingRequest (only the attributes the
glue reads), so it runs without a Ray cluster."""

import asyncio
from dataclasses import dataclass, field

import pytest
from ray.serve._private.common import DeploymentHandleSource, DeploymentID

from cluster.stats import ReplicaStats
from deployments.serve.router import AdapterAwareRouter


@dataclass(frozen=True)
class FakeReplicaID:
    unique_id: str


@dataclass
class FakeReplica:
    replica_id: FakeReplicaID
    routing_stats: dict = field(default_factory=dict)


@dataclass
class FakeMetadata:
    multiplexed_model_id: str
    internal_request_id: str = "req-0"


@dataclass
class FakePending:
    metadata: FakeMetadata
    kwargs: dict = field(default_factory=dict)
    created_at: float | None = None  # Ray's PendingRequest.created_at (time.time())


def _replica(rid, gpu=(), running=0, **extra):
    stats = ReplicaStats(replica_id=rid, gpu_slots=2, cpu_slots=4, gpu_resident=tuple(gpu), running=running, ts=1.0, **extra)
    return FakeReplica(FakeReplicaID(rid), stats.to_dict())


def _router(policy="adapter_affinity", **settings):
    router = AdapterAwareRouter(
        deployment_id=DeploymentID(name="EngineReplica", app_name="lorafleet"),
        handle_source=DeploymentHandleSource.REPLICA,
    )
    router.initialize_state(policy=policy, settings=settings)
    return router


def _choose(router, replicas, adapter, request_id="req-0"):
    return asyncio.run(router.choose_replicas(replicas, FakePending(FakeMetadata(adapter, request_id))))


def test_ranks_hold_one_replica_each_with_the_holder_first():
    replicas = [_replica("a"), _replica("b", gpu=["poet"]), _replica("c")]
    ranks = _choose(_router(), replicas, "poet")
    assert all(len(rank) == 1 for rank in ranks)
    assert ranks[0][0].replica_id.unique_id == "b"


def _route(router, replicas, adapter, request_id):
    """One decision, reported back as Ray does once the replica accepted it."""
    best = _choose(router, replicas, adapter, request_id)[0][0].replica_id
    router.on_request_routed(FakePending(FakeMetadata(adapter, request_id)), best, None)
    return best.unique_id


def test_router_counts_its_own_inflight_so_a_hot_adapter_spreads_before_stats_arrive():
    router = _router(spread_threshold=2, spread_ratio=1.0)
    replicas = [_replica("a", gpu=["poet"]), _replica("b"), _replica("c")]
    chosen = [_route(router, replicas, "poet", f"req-{i}") for i in range(6)]  # stats never change
    assert chosen[0] == "a"
    assert len(set(chosen)) >= 2
    for i, rid in enumerate(chosen):
        router.on_request_completed(FakeReplicaID(rid), f"req-{i}")
    assert router._inflight.total() == 0


def test_a_completion_ray_reports_for_a_request_never_routed_frees_nothing():
    """Ray calls on_request_completed for a request a replica refused, too."""
    router = _router()
    replicas = [_replica("a", gpu=["poet"])]
    _route(router, replicas, "poet", "routed")
    router.on_request_completed(FakeReplicaID("a"), "refused")
    assert router._inflight.count("a") == 1
    assert dict(router._inflight.active_adapters("a")) == {"poet": 1}
    router.on_request_completed(FakeReplicaID("a"), "routed")
    assert router._inflight.count("a") == 0 and not router._inflight.active_adapters("a")


def _busy_slots_scene(router) -> list[FakeReplica]:
    """2 LoRA slots per replica. "a" holds translator in host memory but both its slots
    run poet and haiku requests (routed as r1, r2); "b" is busier but has a free slot."""
    replicas = [
        _replica("a", gpu=["poet", "haiku"], cpu_resident=("poet", "haiku", "translator")),
        _replica("b", gpu=["pirate"], running=3),
    ]
    _route(router, replicas, "poet", "r1")
    _route(router, replicas, "haiku", "r2")
    return replicas


def test_a_replica_whose_slots_run_other_adapters_is_avoided_until_one_drains():
    """translator goes to "b" (one store read) rather than wait on "a" for a slot;
    once poet drains, "a" wins."""
    router = _router()
    replicas = _busy_slots_scene(router)
    assert _choose(router, replicas, "translator")[0][0].replica_id.unique_id == "b"
    router.on_request_completed(FakeReplicaID("a"), "r1")
    assert _choose(router, replicas, "translator")[0][0].replica_id.unique_id == "a"


def test_without_the_slot_scorer_the_busy_holder_wins():
    """The same scene with the slot signal off (scorer and filter): what it changes."""
    router = _router(weight_slots=0, queue_when_slots_busy=False)
    replicas = _busy_slots_scene(router)
    assert _choose(router, replicas, "translator")[0][0].replica_id.unique_id == "a"


def test_a_request_waits_at_the_router_for_a_free_slot_until_its_patience_runs_out():
    """Both replicas' two slots run poet and haiku: a fresh translator request gets no
    rank (Ray retries it); one created a second ago is ranked anyway."""
    import time

    router = _router(slot_wait_patience_s=0.5)
    replicas = [_replica("a", gpu=["poet", "haiku"]), _replica("b", gpu=["poet", "haiku"])]
    for i, rid in enumerate(("a", "a", "b", "b")):
        router.on_request_routed(FakePending(FakeMetadata(("poet", "haiku")[i % 2], f"r{i}")), FakeReplicaID(rid), None)
    fresh = FakePending(FakeMetadata("translator"), created_at=time.time())
    old = FakePending(FakeMetadata("translator"), created_at=time.time() - 1.0)
    assert asyncio.run(router.choose_replicas(replicas, fresh)) == []
    assert len(asyncio.run(router.choose_replicas(replicas, old))) == 2


def test_replicas_without_stats_are_still_routable_and_no_replicas_gives_no_ranks():
    router = _router()
    assert _choose(router, [], "poet") == []
    ranks = _choose(router, [FakeReplica(FakeReplicaID("fresh"))], "poet")
    assert [r[0].replica_id.unique_id for r in ranks] == ["fresh"]


def test_unhealthy_replicas_are_not_chosen():
    replicas = [_replica("a", gpu=["poet"], healthy=False), _replica("b")]
    ranks = _choose(_router(), replicas, "poet")
    assert [r[0].replica_id.unique_id for r in ranks] == ["b"]


@pytest.mark.parametrize("policy", ["multiplex", "lora_affinity_llmd", "random"])
def test_baseline_policies_run_in_the_same_glue(policy):
    replicas = [_replica("a", gpu=["poet"]), _replica("b")]
    ranks = _choose(_router(policy), replicas, "poet")
    assert ranks and all(len(rank) == 1 for rank in ranks)


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown routing policy"):
        _router("fastest")


def test_a_cold_adapter_goes_to_the_replica_the_placement_controller_chose():
    """The plan reaches the router through the replicas' `desired` sets."""
    replicas = [_replica("a"), _replica("b", desired=("poet",)), _replica("c")]
    for _ in range(5):
        assert _choose(_router(), replicas, "poet")[0][0].replica_id.unique_id == "b"


def test_a_retry_avoids_the_replica_that_died_unless_it_is_the_only_one():
    router = _router()
    replicas = [_replica("a", gpu=["poet"]), _replica("b"), _replica("c")]
    retry = FakePending(FakeMetadata("poet"), kwargs={"avoid_replica": "a"})
    ranks = asyncio.run(router.choose_replicas(replicas, retry))
    assert "a" not in {rank[0].replica_id.unique_id for rank in ranks}
    assert ranks  # the others remain
    alone = asyncio.run(router.choose_replicas([_replica("a", gpu=["poet"])], retry))
    assert alone[0][0].replica_id.unique_id == "a"  # better a try than no replica at all


# ---- claims: counted from the choice, not from Ray's report ------------------------------


def test_a_burst_chosen_in_one_instant_spreads_before_ray_reports_any_routing():
    """Before: a request counted only once Ray reported it routed, so a burst of choices
    made before any report all saw empty counts and went to the hot adapter's holder."""
    router = _router(spread_threshold=2, spread_ratio=1.0)
    replicas = [_replica("a", gpu=["poet"]), _replica("b"), _replica("c")]
    chosen = [_choose(router, replicas, "poet", f"burst-{i}")[0][0].replica_id.unique_id for i in range(8)]
    assert chosen[0] == "a" and len(set(chosen)) >= 2


def test_a_claim_ray_routes_elsewhere_moves_and_one_never_routed_expires():
    from deployments.serve.router import Claims
    from cluster.routing.inflight import InflightTracker

    now = [0.0]
    inflight = InflightTracker()
    claims = Claims(inflight, ttl_s=10, clock=lambda: now[0])
    claims.claim("r1", "a", "poet")
    claims.routed("r1", "b", "poet")  # Ray took the second-ranked replica
    assert (inflight.count("a"), inflight.count("b")) == (0, 1)
    claims.claim("r2", "a", "poet")  # cancelled while queued: never routed
    now[0] = 9.0
    claims.expire()
    assert inflight.count("a") == 1
    now[0] = 11.0
    claims.expire()
    assert inflight.count("a") == 0 and len(claims) == 0


def test_the_view_is_rebuilt_only_when_ray_hands_a_new_candidate_list():
    router = _router()
    replicas = [_replica("a", gpu=["poet"]), _replica("b")]
    _choose(router, replicas, "poet", "x1")
    view = router._view
    _choose(router, replicas, "poet", "x2")
    assert router._view is view  # same list object: nothing rebuilt
    changed = [replicas[0], _replica("b", gpu=["haiku"])]
    changed[1].routing_stats["ts"] = 2.0
    _choose(router, changed, "haiku", "x3")
    assert router._view is not view and router._parsed["a"][1] is view.stats("a")  # "a" not re-parsed


def test_peer_aware_routers_split_a_burst_like_one_router_does():
    """Two ingress replicas, one router each: a burst for a hot adapter split between
    them. Counting only their own requests, each lets the holder take its own share
    (14 of 32 here, against 9 with one router); scaled by the number of peers, the
    pair spreads like one router."""
    from bench.two_ingress_burst import burst

    alone = burst(8, 1, 32, seed=1)["holder"]
    blind = burst(8, 2, 32, seed=1, peer_aware=False)["holder"]
    aware = burst(8, 2, 32, seed=1, peer_aware=True)["holder"]
    assert blind > alone + 2  # the blind spot this fixes
    assert aware <= alone
