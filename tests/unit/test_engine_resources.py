"""What a base's engine replicas reserve from Ray and how vLLM spans it: one actor for
one GPU (or none), a STRICT_PACK placement group of N one-GPU bundles with vLLM's
tensor (and pipeline) parallelism for `replica_gpus: N > 1`. Read from the very
options and flags that would run, without a GPU."""

from __future__ import annotations

import pytest

from deployments.app import engine_deployment_options
from deployments.config import parse_config
from deployments.engine.resources import parallel_args, replica_resources
from deployments.engine.vllm_engine import parse_vllm_args


def _config(deployment: dict, engine: dict | None = None) -> dict:
    return {"model": {"source": "/models/llama-70b", "served_name": "llama-70b"},
            "engine": engine or {}, "deployment": {"replica_cpus": 4, **deployment}, "adapters": {"uri": "/adapters"}}


def test_a_four_gpu_replica_is_a_strict_pack_placement_group_of_four_one_gpu_bundles():
    view = parse_config(_config({"replica_gpus": 4}))
    options = replica_resources(view)
    assert options["placement_group_strategy"] == "STRICT_PACK"
    assert options["placement_group_bundles"] == [{"CPU": 4, "GPU": 1.0}] + [{"GPU": 1.0}] * 3
    # The replica actor (bundle 0, beside the first worker) holds no GPU: vLLM's workers do.
    assert options["ray_actor_options"] == {"num_cpus": 4, "num_gpus": 0}


def test_a_four_gpu_replica_runs_vllm_with_tensor_parallel_size_four_on_the_ray_executor():
    args = parse_vllm_args(parse_config(_config({"replica_gpus": 4})))  # vLLM's own parser reads the flags
    assert (args.tensor_parallel_size, args.pipeline_parallel_size, args.distributed_executor_backend) == (4, 1, "ray")


def test_pipeline_stages_split_the_replicas_gpus_with_tensor_parallelism():
    view = parse_config(_config({"replica_gpus": 8}, {"pipeline_parallel_size": 2}))
    args = parse_vllm_args(view)
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (4, 2)
    assert len(replica_resources(view)["placement_group_bundles"]) == 8


@pytest.mark.parametrize("gpus", [0, 0.5, 1])
def test_one_gpu_or_less_is_one_actor_without_a_placement_group_or_parallel_flags(gpus):
    view = parse_config(_config({"replica_gpus": gpus}))
    assert replica_resources(view) == {"ray_actor_options": {"num_cpus": 4, "num_gpus": gpus}}
    assert parallel_args(view) == []
    assert parse_vllm_args(view).tensor_parallel_size == 1


def test_gpu_type_and_node_tags_go_on_the_first_bundle_and_the_type_on_every_bundle():
    view = parse_config(_config({"replica_gpus": 2, "accelerator_type": "H100", "ray_resources": {"base-70b": 0.001}}))
    bundles = replica_resources(view)["placement_group_bundles"]
    assert bundles[0] == {"CPU": 4, "GPU": 1.0, "accelerator_type:H100": 0.001, "base-70b": 0.001}
    assert bundles[1] == {"GPU": 1.0, "accelerator_type:H100": 0.001}


def test_each_bases_engine_deployment_gets_its_own_name_resources_and_router():
    config = parse_config({
        "models": [
            {"source": "/models/llama-8b", "served_name": "llama-8b"},
            {"source": "s3://models/llama-70b/", "served_name": "llama-70b",
             "deployment": {"replica_gpus": 4, "num_replicas": 1}, "routing": {"policy": "multiplex"}},
        ],
        "deployment": {"replica_gpus": 1, "num_replicas": 3},
        "adapters": {"uri": "/adapters"},
    })
    small, large = (engine_deployment_options(config, name) for name in ("llama-8b", "llama-70b"))
    assert (small["name"], small["num_replicas"]) == ("EngineReplica", 3)
    assert (large["name"], large["num_replicas"]) == ("EngineReplica-llama-70b", 1)
    assert "placement_group_bundles" not in small and small["ray_actor_options"]["num_gpus"] == 1
    assert len(large["placement_group_bundles"]) == 4 and large["placement_group_strategy"] == "STRICT_PACK"
    assert small["request_router_config"].request_router_kwargs["base"] == "llama-8b"
    assert large["request_router_config"].request_router_kwargs == {
        **large["request_router_config"].request_router_kwargs, "policy": "multiplex", "base": "llama-70b"}
