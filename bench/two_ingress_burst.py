"""What several ingress replicas do to a burst: each ingress has its own router, and a
router counts only the requests it chose itself until replica stats catch up.

A burst of `--burst` requests for one hot adapter arrives in one instant (faster than
`routing.stats_period_s`), split round-robin over `--routers` routers (the HTTP
proxies' spread over ingress replicas), on `--replicas` idle replicas of which one
holds the adapter in a GPU slot. Each request runs the real router glue
(`deployments.serve.router.AdapterAwareRouter.choose_replicas`, claims at choice
time); nothing completes during the burst and no stats arrive. Reports how many
requests each replica got, the holder's share, and the worst pile-up against what
one router alone does with the same burst (the baseline: the same code, one ingress),
with routers that count only their own requests (`peers=1`, as before) and routers
that scale their counts by the number of ingress replicas (`PeerScaledInflight`).

    python -m bench.two_ingress_burst [--replicas 8] [--burst 32] [--seeds 5]

Writes bench/results/two-ingress-burst.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from random import Random

from bench.harness.router_glue import _Pending, _Replica
from bench.harness.runner import result_header
from cluster.stats import ReplicaStats

HOT = "hot-adapter"


def _fleet(n: int, seed: int) -> list[_Replica]:
    rng = Random(seed)
    holder = rng.randrange(n)
    stats = [ReplicaStats(replica_id=f"replica-{r:02d}", gpu_slots=4, cpu_slots=16,
                          gpu_resident=(HOT,) if r == holder else (f"other-{r}",)) for r in range(n)]
    return [_Replica(s) for s in stats]


def _router(seed: int, peers: int):
    from ray.serve._private.common import DeploymentHandleSource, DeploymentID

    from deployments.serve.router import AdapterAwareRouter

    router = AdapterAwareRouter(deployment_id=DeploymentID(name="EngineReplica", app_name="lorafleet"),
                                handle_source=DeploymentHandleSource.REPLICA)
    router.initialize_state(policy="adapter_affinity", settings={}, peers=peers)
    router._rng = Random(seed)  # noqa: SLF001 - reproducible tie-breaks
    return router


def _choose(router, replicas, request_id: str) -> str:
    coro = router.choose_replicas(replicas, _Pending(HOT, request_id))
    try:
        coro.send(None)
    except StopIteration as done:
        chosen = done.value[0][0]
    router.on_request_routed(_Pending(HOT, request_id), chosen.replica_id, None)
    return chosen.replica_id.unique_id


def burst(n_replicas: int, n_routers: int, size: int, seed: int, *, peer_aware: bool = True) -> dict:
    replicas = _fleet(n_replicas, seed)
    holder = next(r.replica_id.unique_id for r in replicas if HOT in r.routing_stats["gpu_resident"])
    routers = [_router(seed * 100 + i, n_routers if peer_aware else 1) for i in range(n_routers)]
    counts: dict[str, int] = {}
    for i in range(size):
        rid = _choose(routers[i % n_routers], replicas, f"req-{seed}-{i}")
        counts[rid] = counts.get(rid, 0) + 1
    return {"holder": counts.get(holder, 0), "max": max(counts.values()), "replicas_used": len(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--burst", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="bench/results/two-ingress-burst.json")
    args = parser.parse_args()
    rows = []
    for routers, peer_aware in ((1, True), (2, False), (2, True), (4, False), (4, True)):
        runs = [burst(args.replicas, routers, args.burst, seed, peer_aware=peer_aware) for seed in range(1, args.seeds + 1)]
        row = {"routers": routers, "peer_aware": peer_aware, "runs": runs}
        for key in ("holder", "max", "replicas_used"):
            values = [r[key] for r in runs]
            row[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        rows.append(row)
        print(f"{routers} router(s){' peer-aware' if peer_aware and routers > 1 else ''}: holder got {row['holder']['median']} of {args.burst} "
              f"(range {row['holder']['min']}-{row['holder']['max']}), worst replica {row['max']['median']}, "
              f"replicas used {row['replicas_used']['median']}")
    out = {**result_header("two_ingress_burst"), "replicas": args.replicas, "burst": args.burst,
           "what": "one instant burst for one hot adapter, split round-robin over independent routers; no stats update during it",
           "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
