"""Ray Serve's default autoscaler, re-implemented for the simulator (Ray 2.60).

Read from `ray/serve/autoscaling_policy.py` (`replica_queue_length_autoscaling_policy`,
`_apply_scaling_factors`, `_apply_delay_logic`) and `ray/serve/_private/
autoscaling_state.py` (`get_total_num_requests`, `apply_bounds`):

- Metric: total ongoing requests, running and queued, at the replicas and at the
  handles (the router's queue) alike. With metrics collected at handles (Ray's
  default), a handle records a sample every look_back_period_s x 0.2 (6 s) and
  pushes them every 10 s; the controller averages the merged step function over
  the last look_back_period_s (30 s), time-weighted (aggregation "mean").
- desired = current_running_replicas x total / (target_ongoing_requests x
  current_running_replicas) = total / target; with scaling factors of 1,
  ceil(desired), and one less when that would otherwise not move down.
- Delay: a scale-up happens once it has been wanted continuously for
  upscale_delay_s (30 s), a scale-down for downscale_delay_s (600 s), compared
  with the current target (running + starting); then bounds [min, max].
- The controller loop runs every 0.1 s; here every `decision_period_s` (1 s),
  which moves a decision by less than a second.
- Which replica stops: Ray stops pending ones first, then the newest running one
  (on the node with the fewest replicas; every simulated replica is its own node).

Ray Serve LLM ships `max_ongoing_requests` and `target_ongoing_requests` of 1e9
(autoscaling by load effectively off), so "its default" with a target is what an
operator gets after setting the one knob the guide asks for; scenarios sweep that
target and the baseline gets its best value (fewest replica-seconds among the
targets that meet the SLO for >= 99% of requests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RayAutoscalingConfig:
    target_ongoing_requests: float = 2.0  # Ray Serve's default; scenarios sweep it
    min_replicas: int = 1
    max_replicas: int = 64
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0
    metrics_record_factor: float = 0.2  # RAY_SERVE_AUTOSCALING_METRIC_RECORD_INTERVAL_FACTOR
    metrics_push_interval_s: float = 10.0  # RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S
    upscaling_factor: float = 1.0
    downscaling_factor: float = 1.0
    decision_period_s: float = 1.0

    def __post_init__(self) -> None:
        if self.target_ongoing_requests <= 0:
            raise ValueError("target_ongoing_requests must be > 0")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError("need 0 <= min_replicas <= max_replicas, max_replicas >= 1")
        if min(self.look_back_period_s, self.metrics_push_interval_s, self.decision_period_s) <= 0:
            raise ValueError("periods must be > 0")


class RayDefaultAutoscaler:
    """Feed it `record(now, total_ongoing)` whenever a sample is due (`next_record`)
    and ask `decide(now, running, target)` every decision period."""

    def __init__(self, config: RayAutoscalingConfig) -> None:
        self.config = config
        self.record_interval = config.metrics_record_factor * config.look_back_period_s
        self.next_record = 0.0
        self._recorded: list[tuple[float, float]] = []  # at the handle, not yet pushed
        self._pushed: list[tuple[float, float]] = []  # what the controller has
        self._next_push = config.metrics_push_interval_s
        self._decision_ts: float | None = None
        self._decision_dir = 0  # > 0 wants up, < 0 wants down

    def record(self, now: float, total_ongoing: float) -> None:
        self._recorded.append((now, float(total_ongoing)))
        self.next_record = now + self.record_interval

    def _push(self, now: float) -> None:
        while now >= self._next_push:
            cut = self._next_push
            self._pushed.extend(s for s in self._recorded if s[0] <= cut)
            self._recorded = [s for s in self._recorded if s[0] > cut]
            self._next_push += self.config.metrics_push_interval_s
        horizon = now - 2 * self.config.look_back_period_s
        while len(self._pushed) > 1 and self._pushed[1][0] < horizon:
            self._pushed.pop(0)

    def total_num_requests(self, now: float) -> float:
        """Time-weighted mean of the pushed samples over the look-back window; the
        last sample holds for one record interval (Ray's last_window_s)."""
        self._push(now)
        samples = self._pushed
        if not samples:
            return 0.0
        start = max(now - self.config.look_back_period_s, samples[0][0])
        end = min(now, samples[-1][0] + self.record_interval)
        if end <= start:
            return samples[-1][1]
        area = 0.0
        for (t0, v), (t1, _) in zip(samples, samples[1:] + [(end, 0.0)]):
            lo, hi = max(t0, start), min(t1, end)
            if hi > lo:
                area += v * (hi - lo)
        return area / (end - start)

    def decide(self, now: float, running: int, target: int) -> int:
        """The new target given `running` replicas and the current `target`."""
        c = self.config
        if running == 0:
            return max(target, c.min_replicas)
        total = self.total_num_requests(now)
        desired = total / c.target_ongoing_requests
        delta = desired - running
        factor = c.upscaling_factor if delta > 0 else c.downscaling_factor
        scaled = math.ceil(running + factor * delta)
        if math.ceil(desired) < running and scaled == running:
            scaled -= 1
        decision = target
        if scaled > target:
            if self._decision_dir < 0:
                self._decision_ts = None
            self._decision_dir = 1
            if self._decision_ts is None:
                self._decision_ts = now
            if now - self._decision_ts + 1e-6 >= c.upscale_delay_s:
                decision, self._decision_ts, self._decision_dir = scaled, None, 0
        elif scaled < target:
            if self._decision_dir > 0:
                self._decision_ts = None
            self._decision_dir = -1
            if self._decision_ts is None:
                self._decision_ts = now
            if now - self._decision_ts + 1e-6 >= c.downscale_delay_s:
                decision, self._decision_ts, self._decision_dir = max(1, scaled), None, 0
        else:
            self._decision_ts, self._decision_dir = None, 0
        return max(c.min_replicas, min(c.max_replicas, decision))
