"""The autoscalers as the simulator drives them: lorafleet's and Ray Serve's default.

Each turns the simulator's state into its autoscaler's inputs and returns (target,
replicas to drain first); the simulator applies it (`Simulator.scale_to`): new
replicas serve after the start-up delay, removed ones drain first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cluster.autoscaling import AutoscalerState, FleetSnapshot, ReplicaProfile, decide
from cluster.placement import DemandEstimator
from cluster.sim.ray_autoscaler import RayAutoscalingConfig, RayDefaultAutoscaler

if TYPE_CHECKING:
    from cluster.sim.simulator import Simulator


class LorafleetScaler:
    """`cluster.autoscaling.decide`, fed the placement controller's demand model,
    the adapters' costs and read times, the replicas' latest stats and the router's
    queue; every decision is kept (with its reason) for inspection."""

    def __init__(self, sim: Simulator) -> None:
        settings = sim.config.autoscaling
        if settings is None:
            raise ValueError("lorafleet's autoscaler needs autoscaling settings")
        if sim.loop is None:
            raise ValueError("lorafleet's autoscaler reads the placement controller's demand model")
        self.settings = settings
        self.period_s = settings.period_s
        self.min_replicas = settings.min_replicas
        # the profile has no host term: the serving path's CPU per token, where it
        # shares the engine's cores, is a per-sequence step cost like any other
        cost = sim.cost.to_dict()
        cost["step_per_seq_s"] = sim.cost.step_per_seq_s + sim.cost.host_per_token_s
        self.profile = ReplicaProfile.from_mapping(cost)
        self.state = AutoscalerState()
        self.decisions: list[tuple[float, int, str]] = []
        # Base-model requests are nothing to place, so the controller's estimator
        # skips them; the autoscaler still has to serve them (live: vLLM's counters).
        self.base = DemandEstimator(sim.config.placement.half_life_s)
        self._base_seen = (0, 0)

    def decide(self, sim: Simulator, now: float) -> tuple[int, Sequence[str]]:
        loop = sim.loop
        assert loop is not None
        seen = (sim.base_requests, sim.base_tokens)
        self.base.add(now, {"base": seen[0] - self._base_seen[0]}, {"base": seen[1] - self._base_seen[1]})
        self._base_seen = seen
        snapshot = FleetSnapshot(
            now=now,
            replicas=tuple(r.stats(now) for r in sim.order),
            demand=loop.estimator.rates(),
            base=self.base.rate("base"),
            starting=len(sim.starting),
            costs=sim.catalog.costs,
            read_s=sim.catalog.load_s,
            prompt_tokens_per_request=sim.prompt_tokens / sim.arrived if sim.arrived else 0.0,
            fleet_queue=len(sim.backlog),
        )
        decision, self.state = decide(snapshot, self.profile, self.settings, self.state)
        if not self.decisions or self.decisions[-1][1] != decision.target:
            self.decisions.append((now, decision.target, decision.reason))
        return decision.target, [d.replica_id for d in decision.drain]


class RayScaler:
    """Ray Serve's default autoscaler on total ongoing requests (ray_autoscaler.py)."""

    def __init__(self, sim: Simulator, target: float | None) -> None:
        config = sim.config.ray_autoscaling
        if config is None:
            raise ValueError("Ray's autoscaler needs ray_autoscaling settings")
        if target is not None:
            config = RayAutoscalingConfig(**{**config.__dict__, "target_ongoing_requests": target})
        self.config = config
        self.period_s = config.decision_period_s
        self.min_replicas = config.min_replicas
        self.ray = RayDefaultAutoscaler(config)
        self.decisions: list[tuple[float, int, str]] = []

    def decide(self, sim: Simulator, now: float) -> tuple[int, Sequence[str]]:
        if now >= self.ray.next_record:
            self.ray.record(now, sim.inflight.total() + len(sim.backlog))
        running = len(sim.active())
        current = running + len(sim.starting)
        target = self.ray.decide(now, running, current)
        if target != current:
            self.decisions.append((now, target, f"ongoing {self.ray.total_num_requests(now):.1f}"))
        return target, ()  # Ray stops the newest replicas: the simulator's default order


def make_scaler(sim: Simulator):
    spec = sim.spec
    if spec.autoscaler == "lorafleet":
        return LorafleetScaler(sim)
    if spec.autoscaler == "ray":
        return RayScaler(sim, spec.ray_target)
    raise ValueError(f"unknown autoscaler {spec.autoscaler!r}")
