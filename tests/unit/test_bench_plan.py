"""Benchmark plans: every plan in bench/workloads parses, and variants carry their own fleet overrides."""

from pathlib import Path

import pytest

from bench.harness.runner import BenchPlan, Variant, fleet_config
from deployments.config import parse_config

WORKLOADS = Path(__file__).resolve().parents[2] / "bench" / "workloads"
# sim-* and autoscale-* are simulator scenarios (cluster.sim), not live plans
LIVE_PLANS = sorted(p for p in WORKLOADS.glob("*.yaml") if not p.name.startswith(("sim-", "autoscale-")))


@pytest.mark.parametrize("plan_file", LIVE_PLANS, ids=lambda p: p.stem)
def test_every_live_plan_gives_valid_fleet_configs(plan_file, tmp_path):
    plan = BenchPlan.from_file(plan_file)
    assert plan.variants
    for variant in plan.variants:
        config = fleet_config(plan, variant, tmp_path / "base", tmp_path / "adapters", 8123)
        parsed = parse_config(config)
        assert parsed.routing.policy == variant.policy
        assert parsed.server.port == 8123


def test_variant_overrides_apply_on_top_of_the_plan_fleet(tmp_path):
    plan = BenchPlan.from_file(WORKLOADS / "placement-live.yaml")
    on, off = (parse_config(fleet_config(plan, v, tmp_path, tmp_path, 8000)) for v in plan.variants)
    assert (on.placement.enabled, off.placement.enabled) == (True, False)
    assert on.deployment.num_replicas == off.deployment.num_replicas == 2  # the plan's fleet still applies


def test_bare_policy_name_is_a_variant_labelled_by_it():
    assert Variant.parse("pow2") == Variant("pow2", "pow2", {})
