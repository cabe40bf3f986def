"""The simulator's copy of Ray Serve's default autoscaler decides as Ray 2.60 does.

Checked against Ray's own code (`ray.serve.autoscaling_policy`, imported here only:
no Ray cluster is started), so the baseline the issue asks for is Ray's policy, not
our reading of it.
"""

from __future__ import annotations

import pytest
import ray.serve.autoscaling_policy as ray_policy
from ray.serve._private.common import DeploymentID
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from cluster.sim.ray_autoscaler import RayAutoscalingConfig, RayDefaultAutoscaler

MIN, MAX, TARGET = 1, 20, 4.0


def ray_decider(monkeypatch):
    """Ray's default policy as its controller applies it: wrapped in scaling factors
    and delays (`_apply_autoscaling_config`), then bounded to [min, max]."""
    clock = {"now": 0.0}
    monkeypatch.setattr(ray_policy.time, "time", lambda: clock["now"])
    config = AutoscalingConfig(target_ongoing_requests=TARGET, min_replicas=MIN, max_replicas=MAX)
    policy = ray_policy._apply_autoscaling_config(ray_policy.replica_queue_length_autoscaling_policy)
    state: dict = {}

    def decide(now: float, total: float, running: int, target: int) -> int:
        nonlocal state
        clock["now"] = now
        ctx = AutoscalingContext(
            deployment_id=DeploymentID(name="engine", app_name="app"), deployment_name="engine", app_name="app",
            current_num_replicas=running, target_num_replicas=target, running_replicas=[],
            total_num_requests=total, total_queued_requests=0.0, aggregated_metrics={}, raw_metrics={},
            capacity_adjusted_min_replicas=MIN, capacity_adjusted_max_replicas=MAX, policy_state=state,
            last_scale_up_time=None, last_scale_down_time=None, current_time=now, config=config,
        )
        decision, state = policy(ctx)
        return max(MIN, min(MAX, decision))

    return decide


# (seconds from start, total ongoing requests over the look-back window)
LOAD = [(t, 8.0) for t in range(0, 20)] + [(t, 60.0) for t in range(20, 80)] + [(t, 3.0) for t in range(80, 800, 5)]


def test_decisions_match_rays_default_policy_step_by_step(monkeypatch):
    ray = ray_decider(monkeypatch)
    ours = RayDefaultAutoscaler(RayAutoscalingConfig(target_ongoing_requests=TARGET, min_replicas=MIN, max_replicas=MAX))
    running = target_ray = target_ours = 2
    trajectory = []
    for now, total in LOAD:
        monkeypatch.setattr(ours, "total_num_requests", lambda _now, total=total: total)
        target_ray = ray(float(now), total, running, target_ray)
        target_ours = ours.decide(float(now), running, target_ours)
        assert target_ours == target_ray, f"t={now}: ours {target_ours}, Ray {target_ray}"
        running = target_ray  # replicas come up at once here: only the policy is compared
        trajectory.append(target_ray)
    # the load did move it: up after the 30 s upscale delay, down after 600 s
    assert max(trajectory) == 15 and trajectory[-1] == 1
    assert trajectory.index(15) == 50  # 60 requests from t=20, 30 s delay


def test_the_metric_is_a_time_weighted_mean_of_pushed_samples():
    """A sample every 6 s (0.2 x the 30 s look-back) at the handle, pushed every 10 s;
    the controller averages what it has over the last 30 s."""
    scaler = RayDefaultAutoscaler(RayAutoscalingConfig())
    seen = {}
    for t in range(0, 61, 6):
        scaler.record(float(t), 10.0 if t < 30 else 40.0)
        if t in (12, 48):
            seen[t] = scaler.total_num_requests(t + 2.0)
    assert seen[12] == pytest.approx(10.0)  # samples 0 and 6 pushed at 10 s
    # at 50 s: samples to 48 pushed; window [20, 50]: 10 until 30, then 40
    assert seen[48] == pytest.approx((10 * 10 + 40 * 20) / 30)
    assert scaler.total_num_requests(60.0) == pytest.approx(40.0)  # window [30, 60]


def test_nothing_is_seen_before_the_first_push():
    scaler = RayDefaultAutoscaler(RayAutoscalingConfig())
    scaler.record(0.0, 50.0)
    assert scaler.total_num_requests(9.9) == 0.0
    assert scaler.total_num_requests(10.0) == pytest.approx(50.0)
