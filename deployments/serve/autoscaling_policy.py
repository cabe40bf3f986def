"""The Ray Serve custom autoscaling policy of the engine deployment: follow the fleet controller.

The decision itself is `cluster.autoscaling.decide`, run by the fleet controller
(it has the demand model, every replica's stats and the ingresses' queues). It
reaches Ray Serve's controller the one way Ray offers: each engine replica gets the
target back with its stats report and publishes it from `record_autoscaling_stats`
(metric `TARGET_METRIC`); Ray aggregates those over `look_back_period_s` and calls
this function every control-loop tick.

Kept tiny and import-light: it runs inside Ray Serve's controller process.
"""

from __future__ import annotations

TARGET_METRIC = "lorafleet_target_replicas"
POLICY_PATH = "deployments.serve.autoscaling_policy:follow_fleet_controller"


def target_from_reports(reported: dict | None, current_target: int) -> int:
    """The replica count the replicas relay from the controller. The largest report
    wins: right after a scale-up decision, replicas that have not reported since
    still carry the older, lower target; after a scale-down the stale higher value
    ages out of the look-back window within seconds. No report yet (a fresh
    deployment, a restarted controller): keep the current target."""
    values = [v for v in (reported or {}).values() if isinstance(v, (int, float)) and v >= 1]
    return int(max(values)) if values else current_target


def follow_fleet_controller(ctx) -> tuple[int, dict]:
    """Ray Serve's policy signature: (AutoscalingContext) -> (replicas, policy state)."""
    reported = (ctx.aggregated_metrics or {}).get(TARGET_METRIC)
    return target_from_reports(reported, ctx.target_num_replicas), {}
