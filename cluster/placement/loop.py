"""The placement controller's pure core: replica reports in, desired sets out.

The live controller (a Ray Serve deployment in `deployments/`) and the simulator
drive the same object, so the order of operations (drop silent replicas, update the
demand estimate, plan, diff) is written once:

    loop = PlacementLoop(settings)
    # whenever a replica reports (~1 s):
    desired_for_it = loop.report(stats, now)      # -> ReplicaPlacement to apply
    # on a timer (e.g. every second; it plans only every settings.period_s):
    loop.tick(now)
    # the router's hint:
    ClusterView(stats, placement=loop.desired.table())

`now` is the caller's clock in seconds (monotonic). Nothing here reads a clock,
except `time.perf_counter` to time the planner's pass for metrics.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from cluster.placement.demand import DemandEstimator
from cluster.placement.planner import (
    Action,
    DesiredPlacement,
    PlacementSnapshot,
    ReplicaPlacement,
    diff,
    plan,
)
from cluster.placement.settings import PlacementSettings
from cluster.stats import ReplicaStats


class PlacementLoop:
    """Keeps the latest report per replica, the demand estimate and the current plan.

    Attributes read by the caller: `desired` (the current DesiredPlacement, empty
    until the first plan), `last_actions` (diff of the last plan against the reports
    it was made from: what the fleet still had to do then), `last_plan_s` (wall time
    of the last planning pass, for a duration metric), `plans` (passes so far).
    """

    def __init__(
        self, settings: PlacementSettings | None = None, costs: Mapping[str, float] | None = None
    ) -> None:
        """`costs`: adapter -> relative LoRA step cost (`cluster.lora_cost`, from
        each adapter's rank and target modules); unknown adapters count 1.0. The
        caller may replace the mapping (`loop.costs = ...`) as adapters come."""
        self.settings = settings or PlacementSettings()
        self.costs: Mapping[str, float] = costs or {}
        self.estimator = DemandEstimator(self.settings.half_life_s, self.settings.warm_half_life_s)
        self.desired = DesiredPlacement()
        self.last_actions: list[Action] = []
        self.last_plan_s = 0.0
        self.plans = 0
        self._latest: dict[str, tuple[float, ReplicaStats]] = {}
        self._next_plan: float | None = None

    def report(self, stats: ReplicaStats, now: float) -> ReplicaPlacement:
        """Record a replica's report (received at `now`) and return what that replica
        should hold: the pull model, each replica reconciles itself toward it."""
        self._latest[stats.replica_id] = (now, stats)
        return self.desired.for_replica(stats.replica_id)

    def fleet(self, now: float) -> dict[str, ReplicaStats]:
        """Latest stats of the replicas that reported within report_timeout_s."""
        timeout = self.settings.report_timeout_s
        return {rid: s for rid, (t, s) in self._latest.items() if now - t <= timeout}

    def tick(self, now: float, *, force_plan: bool = False) -> bool:
        """Drop silent replicas, fold the latest reports into the demand estimate,
        and plan if a period has passed (or `force_plan`). Returns whether it
        planned. Call it at least as often as replicas report: the estimate only
        sees counters at ticks."""
        fleet = self.observe(now)
        if self._next_plan is None:
            self._next_plan = now + self.settings.period_s
        if not force_plan and now < self._next_plan:
            return False
        self._next_plan = now + self.settings.period_s
        self.replan(fleet)
        return True

    def observe(self, now: float) -> dict[str, ReplicaStats]:
        """Drop silent replicas and fold the latest reports into the demand estimate,
        without planning (tick does this first; an autoscaler that only needs the
        demand model can call it alone). Returns the fleet it observed."""
        fleet = self.fleet(now)
        for rid in [rid for rid in self._latest if rid not in fleet]:
            del self._latest[rid]
            self.estimator.forget(rid)
        self.estimator.observe(fleet.values(), now)
        return fleet

    def replan(self, fleet: dict[str, ReplicaStats]) -> DesiredPlacement:
        """Plan against `fleet` with the current estimate; becomes `desired`."""
        started = time.perf_counter()
        # An adapter some replica could not load (deleted, corrupted) keeps its demand
        # estimate until it decays, but placing it would only waste a slot.
        unloadable = {a for s in fleet.values() for a in s.unloadable}
        rates = {a: r for a, r in self.estimator.rates().items() if a not in unloadable}
        snapshot = PlacementSnapshot(fleet.values(), rates, self.costs)
        self.desired = plan(snapshot, self.settings, self.desired if self.plans else None)
        self.last_plan_s = time.perf_counter() - started
        self.last_actions = diff(self.desired, fleet)
        self.plans += 1
        return self.desired
