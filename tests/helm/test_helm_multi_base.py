"""The README's two-base GPU example, rendered through the chart: what would run.

The block between the README's `two-base-gpu` markers is Helm values (an 8B base on
one-GPU pods, a 70B base tensor-parallel over 4 GPUs). Merged over ci/s3-values.yaml
(credentials and storage wiring the example leaves out), rendered, and the rendered
serveConfigV2 built as Ray Serve's controller would: the 70B base's engine deployment
must reserve a STRICT_PACK placement group of four one-GPU bundles, and its vLLM flags
(parsed by vLLM's own parser) must say tensor parallel 4 on the Ray executor; the 8B
base stays one GPU per replica, no placement group.
"""

from __future__ import annotations

import re

import yaml

from deployments.config import parse_config
from deployments.engine.vllm_engine import parse_vllm_args
from tests.helm.rendering import REPO, ci_values, merged, render_chart
from tests.helm.serve_build import deployment_infos_after_overrides

SMALL, LARGE = "llama-3.1-8b-instruct", "llama-3.3-70b-instruct"


def readme_values() -> dict:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- two-base-gpu:begin -->\n```yaml\n(.*?)```\n<!-- two-base-gpu:end -->", readme, re.S)
    assert block, "README.md lost its two-base-gpu block"
    return yaml.safe_load(block.group(1))


def _rendered_app() -> dict:
    (app,) = render_chart(merged(ci_values("s3-values.yaml"), readme_values())).serve_config["applications"]
    return app


def test_the_readme_two_base_example_renders_one_engine_deployment_per_base(no_ray_auto_connect):
    app = _rendered_app()
    config = parse_config(app["args"])
    assert config.served_names == (SMALL, LARGE)
    infos = deployment_infos_after_overrides({"applications": [app]})
    assert {"Ingress", "FleetController", "EngineReplica", f"EngineReplica-{LARGE.replace('.', '-')}"} == set(infos)


def test_the_70b_base_reserves_a_strict_pack_group_of_four_gpus_and_vllm_runs_tensor_parallel_4(no_ray_auto_connect):
    app = _rendered_app()
    infos = deployment_infos_after_overrides({"applications": [app]})
    large = infos[f"EngineReplica-{LARGE.replace('.', '-')}"].replica_config
    assert large.placement_group_strategy == "STRICT_PACK"
    assert [b.get("GPU") for b in large.placement_group_bundles] == [1.0] * 4
    assert large.placement_group_bundles[0]["CPU"] == 8
    assert all(b["accelerator_type:H100"] > 0 for b in large.placement_group_bundles)
    assert large.ray_actor_options["num_gpus"] == 0  # vLLM's workers hold the GPUs, in the group
    args = parse_vllm_args(parse_config(app["args"]).for_base(LARGE))
    assert (args.tensor_parallel_size, args.pipeline_parallel_size, args.distributed_executor_backend) == (4, 1, "ray")
    assert (args.max_loras, args.max_model_len, args.dtype) == (4, 16384, "bfloat16")


def test_the_8b_base_stays_one_gpu_per_replica_without_a_placement_group(no_ray_auto_connect):
    app = _rendered_app()
    small = deployment_infos_after_overrides({"applications": [app]})["EngineReplica"]
    assert small.replica_config.placement_group_bundles is None
    assert small.replica_config.ray_actor_options["num_gpus"] == 1
    assert small.deployment_config.num_replicas == 4
    args = parse_vllm_args(parse_config(app["args"]).for_base(SMALL))
    assert (args.tensor_parallel_size, args.max_loras) == (1, 8)


def test_a_base_whose_replicas_fit_no_worker_group_fails_the_render_naming_it():
    import pytest

    values = merged(ci_values("s3-values.yaml"), readme_values())
    values["workerGroups"] = [g for g in values["workerGroups"] if g["gpus"] == 1]  # no 4-GPU pods left
    with pytest.raises(Exception, match=f"base {LARGE}"):
        render_chart(values, fresh=True)
