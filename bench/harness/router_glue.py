"""Ray's view of the engine replicas, for timing the router glue without a cluster:
stand-ins for `RunningReplica` / `PendingRequest` with only what the glue reads, over
the synthetic steady-state fleet of `cluster.routing.synthetic`."""

from __future__ import annotations

from random import Random

from cluster.routing.synthetic import synthetic_fleet

N_ADAPTERS = 1000


class _ReplicaID:
    def __init__(self, unique_id):
        self.unique_id = unique_id


class _Replica:
    """Ray's RunningReplica, as far as the glue reads it."""

    def __init__(self, stats):
        self.replica_id = _ReplicaID(stats.replica_id)
        self.routing_stats = stats.to_dict()


class _Metadata:
    def __init__(self, adapter, request_id):
        self.multiplexed_model_id = adapter
        self.internal_request_id = request_id


class _Pending:
    def __init__(self, adapter, request_id):
        self.metadata = _Metadata(adapter, request_id)
        self.kwargs = {}


def glue_router_and_replicas(n_replicas: int):
    """An AdapterAwareRouter over `n_replicas` synthetic replicas, as Ray would hold them."""
    from ray.serve._private.common import DeploymentHandleSource, DeploymentID

    from deployments.serve.router import AdapterAwareRouter

    fleet = synthetic_fleet(n_replicas, n_adapters=N_ADAPTERS, rng=Random(1234))
    replicas = [_Replica(s) for s in fleet]
    router = AdapterAwareRouter(deployment_id=DeploymentID(name="EngineReplica", app_name="lorafleet"),
                                handle_source=DeploymentHandleSource.REPLICA)
    router.initialize_state(policy="adapter_affinity", settings={})
    return router, replicas


def glue_decision(router, replicas, adapter: str, request_id: str) -> None:
    """One request's whole glue path: choose (the coroutine never awaits, so it is
    driven directly), routed, completed."""
    coro = router.choose_replicas(replicas, _Pending(adapter, request_id))
    try:
        coro.send(None)
    except StopIteration as done:
        chosen = done.value
    router.on_request_routed(_Pending(adapter, request_id), chosen[0][0].replica_id, None)
    router.on_request_completed(chosen[0][0].replica_id, request_id)
