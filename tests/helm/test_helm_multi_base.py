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


# ---------------------------------------------------------------- a worker group per base

def _group_resources(spec: dict) -> dict[str, float]:
    """What Ray's autoscaler (and `ray start`) make of a rendered worker group: its
    node's resources, read by Ray's own KubeRay config reader."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _get_ray_resources_from_group_spec

    return _get_ray_resources_from_group_spec(spec, is_head=False)


def _reservations(info) -> list[dict[str, float]]:
    """What one replica of an engine deployment asks Ray for: its placement group's
    bundles (all on one node, STRICT_PACK) or its actor's resources."""
    rc = info.replica_config
    if rc.placement_group_bundles:
        return rc.placement_group_bundles
    options = rc.ray_actor_options
    return [{"CPU": options.get("num_cpus", 0), "GPU": options.get("num_gpus", 0), **options.get("resources", {})}]


def _fits(bundles: list[dict[str, float]], node: dict[str, float]) -> bool:
    need: dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            need[name] = need.get(name, 0) + amount
    return all(amount <= 0 or node.get(name, 0) >= amount for name, amount in need.items())


def test_each_base_runs_only_on_the_worker_group_listing_it(no_ray_auto_connect):
    rendered = render_chart(merged(ci_values("s3-values.yaml"), readme_values()))
    groups = {g["groupName"]: _group_resources(g) for g in rendered.worker_groups}
    groups["h100-4x"]["accelerator_type:H100"] = 1  # what Ray detects on that pod's GPUs when it starts
    assert groups["gpu-1x"]["lorafleet-base-llama-3-1-8b-instruct"] > 0
    assert groups["h100-4x"]["lorafleet-base-llama-3-3-70b-instruct"] > 0
    (app,) = rendered.serve_config["applications"]
    infos = deployment_infos_after_overrides({"applications": [app]})
    where = {base: sorted(g for g, node in groups.items() if _fits(_reservations(infos[name]), node))
             for base, name in ((SMALL, "EngineReplica"), (LARGE, f"EngineReplica-{LARGE.replace('.', '-')}"))}
    # Without the dedication the 8B's one-GPU replica would fit an H100 pod too (and break
    # up the four GPUs the 70B's placement group needs).
    assert where == {SMALL: ["gpu-1x"], LARGE: ["h100-4x"]}


def test_the_resource_names_follow_the_configs_base_slug():
    from deployments.config import slug

    rendered = render_chart(merged(ci_values("s3-values.yaml"), readme_values()))
    (app,) = rendered.serve_config["applications"]
    for model in parse_config(app["args"]).models:
        assert f"lorafleet-base-{slug(model.served_name)}" in model.deployment.ray_resources


def _dedicated(**changes) -> dict:
    values = merged(ci_values("s3-values.yaml"), readme_values())
    for group in values["workerGroups"]:
        group.update(changes.get(group["name"], {}))
    return values


def test_a_group_listing_a_base_the_fleet_does_not_serve_is_refused():
    import pytest

    with pytest.raises(Exception, match=r'workerGroups\[gpu-1x\]\.models: "llama-2" is not a served base'):
        render_chart(_dedicated(**{"gpu-1x": {"models": [SMALL, "llama-2"]}}), fresh=True)


def test_a_base_no_dedicated_group_lists_is_refused_naming_it():
    import pytest

    with pytest.raises(Exception, match=f"base {SMALL} is listed in no workerGroups"):
        render_chart(_dedicated(**{"gpu-1x": {"models": []}}), fresh=True)


def test_custom_resources_set_both_ways_are_refused():
    import pytest

    with pytest.raises(Exception, match="rayStartParams.resources and models"):
        render_chart(_dedicated(**{"gpu-1x": {"rayStartParams": {"resources": '"{\\"x\\": 1}"'}}}), fresh=True)


def test_a_bases_capacity_counts_only_the_groups_listing_it():
    import pytest

    # The 70B listed only on the one-GPU group: the H100 pods could hold it, but it may not
    # run there, so the render fails; listed on both, it renders.
    with pytest.raises(Exception, match=f"base {LARGE}: .* the worker groups listing it"):
        render_chart(_dedicated(**{"gpu-1x": {"models": [SMALL, LARGE]}, "h100-4x": {"models": [SMALL]}}), fresh=True)
    render_chart(_dedicated(**{"gpu-1x": {"models": [SMALL, LARGE]}, "h100-4x": {"models": [SMALL, LARGE]}}), fresh=True)
