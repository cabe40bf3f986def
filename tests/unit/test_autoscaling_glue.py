"""The live glue of autoscaling, without Ray: the policy Ray Serve calls, the config
that turns it on, the ingress's queue signal, and per-replica CPU binding."""

import pytest

from deployments.app import replica_count_options
from deployments.config import ConfigError, parse_config
from deployments.engine.cpu_binding import binding_mask, cores_for
from deployments.serve.autoscaling_policy import POLICY_PATH, TARGET_METRIC, follow_fleet_controller, target_from_reports
from deployments.tenancy.admission import LatencyBoundedGate


class _Ctx:
    def __init__(self, reported, target):
        self.aggregated_metrics = {TARGET_METRIC: reported} if reported is not None else {}
        self.target_num_replicas = target


def test_the_policy_follows_the_largest_relayed_target():
    assert follow_fleet_controller(_Ctx({"r1": 2.0, "r2": 3.0}, 1)) == (3, {})


def test_the_policy_keeps_the_current_target_until_a_replica_relays_one():
    assert follow_fleet_controller(_Ctx(None, 2)) == (2, {})
    assert target_from_reports({"r1": 0.0}, 2) == 2  # 0: nothing relayed yet


def _config(tmp_path, **extra):
    return {"model": {"source": str(tmp_path), "served_name": "base"}, "adapters": {"uri": str(tmp_path)}, **extra}


def test_autoscaling_is_wired_to_ray_serve_only_when_enabled(tmp_path):
    fixed = parse_config(_config(tmp_path, deployment={"num_replicas": 2}))
    assert replica_count_options(fixed) == {"num_replicas": 2}
    scaled = parse_config(_config(tmp_path, deployment={"num_replicas": 1},
                                  autoscaling={"enabled": True, "settings": {"min_replicas": 1, "max_replicas": 3}}))
    options = replica_count_options(scaled)["autoscaling_config"]
    assert (options["min_replicas"], options["initial_replicas"], options["max_replicas"]) == (1, 1, 3)
    assert options["policy"] == {"policy_function": POLICY_PATH}
    assert scaled.max_engine_replicas() == 3 and fixed.max_engine_replicas() == 2
    assert scaled.replica_profile().max_num_seqs == scaled.engine.max_num_seqs


def test_autoscaling_without_placement_or_outside_its_bounds_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs placement.enabled"):
        parse_config(_config(tmp_path, autoscaling={"enabled": True}, placement={"enabled": False}))
    with pytest.raises(ConfigError, match="initial count"):
        parse_config(_config(tmp_path, deployment={"num_replicas": 5},
                             autoscaling={"enabled": True, "settings": {"max_replicas": 3}}))


def test_held_back_counts_requests_without_a_seat_and_refusals_once():
    gate = LatencyBoundedGate(hard_limit=10, slots=2, max_wait_s=5.0, cold_queue=100)
    tickets = [gate.try_enter() for _ in range(5)]
    assert all(tickets) and gate.held_back() == 3
    gate.refused += 4
    assert gate.held_back() == 3 + 4
    assert gate.held_back() == 3  # refusals are reported once


def test_each_replica_on_a_node_gets_its_own_cores():
    assert [cores_for(rank, 1, [0, 1]) for rank in range(3)] == [[0], [1], [0]]
    assert cores_for(1, 2, [0, 1, 2, 3]) == [2, 3]
    assert binding_mask("per_replica", local_rank=1, replica_cpus=1.0, engine_threads=0, available=[0, 1]) == "1"
    assert binding_mask("auto", local_rank=1, replica_cpus=1.0, engine_threads=0, available=[0, 1]) is None
    assert binding_mask("none", local_rank=1, replica_cpus=1.0, engine_threads=0, available=[0, 1]) == "nobind"


def test_pow2_is_ray_serves_own_router_untouched_and_the_others_run_lorafleets(tmp_path):
    from deployments.app import request_router_config
    from deployments.serve.router import ROUTER_CLASS_PATH

    ray_default = request_router_config(parse_config(_config(tmp_path, routing={"policy": "pow2"})))
    assert ray_default.request_router_class == type(request_router_config(parse_config(_config(tmp_path)))).model_fields[
        "request_router_class"].default  # Ray's default class, no kwargs of ours
    assert not ray_default.request_router_kwargs
    ours = request_router_config(parse_config(_config(tmp_path, routing={"policy": "multiplex"})))
    assert ours.request_router_class == ROUTER_CLASS_PATH and ours.request_router_kwargs["policy"] == "multiplex"
