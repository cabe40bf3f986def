"""What one engine replica reserves from Ray, and how its engine spans it.

A replica with `deployment.replica_gpus` <= 1 is one Ray actor holding that many GPUs
(vLLM's in-process executor on one GPU, a share of one, or the CPU).

A replica with N > 1 GPUs is one tensor- (and pipeline-) parallel engine, as Ray Serve
LLM runs one: a Ray placement group of N bundles of one GPU each, packed on one node
(`STRICT_PACK`: tensor parallelism exchanges activations every layer, which only
NVLink/PCIe within a node makes affordable), and vLLM's Ray executor starting one
worker per GPU inside it (`--distributed-executor-backend ray`; the engine is handed
the replica's placement group, `VLLMEngine.start`). The replica actor itself holds no
GPU: it sits in the first bundle beside the first worker, with its CPUs (Ray Serve
places a replica in bundle 0, so bundle 0 = replica CPUs + one GPU, as Ray Serve LLM's
`_merge_replica_actor_and_child_actor_bundles` does). Routing, placement and metrics
see one replica: one Serve replica, one engine, one set of LoRA slots.

Pure: plain dicts of Ray Serve deployment options, so a test (and Helm's serveConfig
check) can read exactly what would run without a GPU.
"""

from __future__ import annotations

from typing import Any

from deployments.config import LorafleetConfig, parallel_gpus

PLACEMENT_STRATEGY = "STRICT_PACK"
ACCELERATOR_HINT = 0.001  # what Ray Serve LLM asks of `accelerator_type:<T>` per bundle: a tag, not a quantity


def is_parallel(view: LorafleetConfig) -> bool:
    """One engine over several GPUs (a placement group), rather than one actor."""
    return parallel_gpus(view.deployment) > 1


def replica_resources(view: LorafleetConfig) -> dict[str, Any]:
    """Ray Serve deployment options for one base's engine replicas: `ray_actor_options`
    (without the runtime env), and for a parallel engine `placement_group_bundles` and
    `placement_group_strategy`."""
    d = view.deployment
    tags = dict(d.ray_resources)
    accelerator = {f"accelerator_type:{d.accelerator_type}": ACCELERATOR_HINT} if d.accelerator_type else {}
    if not is_parallel(view):
        actor: dict[str, Any] = {"num_cpus": d.replica_cpus, "num_gpus": d.replica_gpus}
        if d.accelerator_type:
            actor["accelerator_type"] = d.accelerator_type
        if tags:
            actor["resources"] = tags
        return {"ray_actor_options": actor}
    gpus = parallel_gpus(d)
    first = {"CPU": d.replica_cpus, "GPU": 1.0, **accelerator, **tags}
    bundles = [first] + [{"GPU": 1.0, **accelerator} for _ in range(gpus - 1)]
    actor = {"num_cpus": d.replica_cpus, "num_gpus": 0, "resources": {**accelerator, **tags}}
    if not actor["resources"]:
        del actor["resources"]
    return {"ray_actor_options": actor, "placement_group_bundles": bundles, "placement_group_strategy": PLACEMENT_STRATEGY}


def parallel_args(view: LorafleetConfig) -> list[str]:
    """vLLM flags of a parallel engine: its tensor and pipeline sizes, and the Ray
    executor (its workers run in the replica's placement group). None for one GPU."""
    if not is_parallel(view):
        return []
    return [
        "--tensor-parallel-size", str(view.tensor_parallel_size()),
        "--pipeline-parallel-size", str(view.engine.pipeline_parallel_size),
        "--distributed-executor-backend", "ray",
    ]
