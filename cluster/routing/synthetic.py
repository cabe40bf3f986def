"""Synthetic but realistic fleet snapshots, for benchmarks and tests of routing.

Kept next to the policy (not in tests/) so the micro-benchmark, unit tests and the
simulator's smoke runs measure the same kind of fleet.
"""

from __future__ import annotations

from random import Random

from cluster.stats import ReplicaStats


def adapter_name(i: int) -> str:
    return f"adapter-{i:04d}"


def synthetic_fleet(
    n_replicas: int,
    *,
    n_adapters: int = 1000,
    gpu_slots: int = 4,
    cpu_slots: int = 16,
    rng: Random | None = None,
) -> list[ReplicaStats]:
    """`n_replicas` healthy replicas in steady state: each holds `gpu_slots` adapters
    in GPU slots and `cpu_slots - gpu_slots` more in its CPU cache (drawn from
    `n_adapters`, disjoint per replica like the residency mirror reports them), about
    one in eight is loading one more, and queue, running and KV usage vary."""
    rng = rng or Random(0)
    names = [adapter_name(i) for i in range(n_adapters)]
    fleet = []
    for r in range(n_replicas):
        held = rng.sample(names, min(n_adapters, cpu_slots + 1))
        gpu = tuple(held[:gpu_slots])
        cpu = tuple(held[gpu_slots:cpu_slots])
        loading = tuple(held[cpu_slots:]) if rng.random() < 0.125 else ()
        running = rng.randint(0, 16)
        fleet.append(
            ReplicaStats(
                replica_id=f"replica-{r:04d}",
                node_id=f"node-{r // 8:03d}",
                gpu_slots=gpu_slots,
                cpu_slots=cpu_slots,
                gpu_resident=gpu,
                cpu_resident=cpu,
                loading=loading,
                queue_len=rng.randint(0, 4) if running > 12 else 0,
                running=running,
                kv_cache_usage=round(rng.uniform(0.05, 0.97), 3),
                per_adapter_requests={a: rng.randint(0, 4) for a in gpu},
                healthy=True,
                ts=0.0,
            )
        )
    return fleet
