"""The fleet controller: the one place that knows every replica's latest stats, and
the placement controller that decides which replica should hold which adapter.

A single-replica Ray Serve deployment (Serve restarts it if it dies). Engine replicas
push their stats to it every `report_period_s` and get their desired adapter set back
(pull model: a replica that dies simply stops reporting, ages out, and its adapters
are re-placed at the next plan). The planning itself is the pure `PlacementLoop`
(cluster/placement), the same code the simulator runs. It holds no state replicas
cannot rebuild: a restarted controller is complete again after a few reports, and
while it is down, replicas keep serving and routers route on replica stats alone.

With autoscaling on, it also sizes the engine deployment: every placement period it
runs the pure `cluster.autoscaling.decide` over the replicas' stats, the demand
estimate and the requests the ingresses hold back (reported with their long poll),
and hands the target to every replica with its report answer; the replicas relay it
to Ray Serve's controller (`deployments.serve.autoscaling_policy`). Ray stops
replicas gracefully (each finishes what it runs), newest first on a node, so that
order is the one the decision's drain choice is made from.

It also carries one message the request path cannot: when a client leaves
mid-generation, its stream is cancelled, so the engine's count of what it produced
(`AbortedUsage`) reaches the ingress replica holding the bill through here
(`record_aborted_usage` from replicas, `take_aborted_usage` from ingresses). A lost
report (a controller restart) costs exactness, not usage: the ingress then bills what
it saw (deployments.tenancy.billing).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray import serve

from cluster.autoscaling import AutoscalerState, AutoscalingSettings, FleetSnapshot, ReplicaProfile, decide
from cluster.placement.loop import PlacementLoop
from cluster.placement.settings import PlacementSettings
from cluster.stats import ReplicaStats
from deployments.engine.protocol import AbortedUsage
from deployments.observability import metrics

logger = logging.getLogger(__name__)

# A replica silent for this many report periods is considered gone.
STALE_AFTER_PERIODS = 5
# Aborted-usage reports held per ingress replica until it takes them (an ingress that
# never does, e.g. one that died, cannot grow the controller without bound).
MAX_ABORT_REPORTS_PER_INGRESS = 10_000
MAX_UNSERVABLE = 10_000  # adapter contents remembered as unservable (each is a 64-hex fingerprint)
# An ingress's count of held-back requests is used for this long after it was reported
# (ingresses report with every long poll for aborted usage, at least every ~5 s).
INGRESS_REPORT_TTL_S = 15.0


@serve.deployment(name="FleetController", num_replicas=1, max_ongoing_requests=1000)
class FleetController:
    def __init__(self, report_period_s: float = 1.0, placement: dict | None = None, autoscaling: dict | None = None):
        self.report_period_s = report_period_s
        self._loop = PlacementLoop(PlacementSettings(**placement)) if placement is not None else None
        self._scaling = None
        if autoscaling is not None and self._loop is not None:
            self._scaling = (ReplicaProfile(**autoscaling["profile"]), AutoscalingSettings(**autoscaling["settings"]))
        self._scale_state = AutoscalerState(target=autoscaling["initial"]) if autoscaling else AutoscalerState()
        self._held_back: dict[str, tuple[float, int]] = {}  # ingress -> (when, requests waiting or refused)
        self._ticker: asyncio.Task | None = None
        self._replicas: dict[str, ReplicaStats] = {}
        self._received_at: dict[str, float] = {}
        self._live_gauge = metrics.LiveReplicasGauge(self._live, report_period_s)
        self._unservable: dict[str, None] = {}  # adapter fingerprints some engine refused (oldest first)
        self._aborted: dict[str, list[AbortedUsage]] = {}
        self._aborted_ready: dict[str, asyncio.Event] = {}

    async def report(self, stats: dict, unservable: list[str] | None = None) -> dict:
        """Record a replica's stats (and the adapter contents its engine refused); answer
        {"desired": what it should hold ({"gpu": [...], "cpu": [...]}, None when placement
        is off), "unservable": every adapter fingerprint the fleet found unloadable}."""
        replica = ReplicaStats.from_dict(stats)
        now = time.monotonic()
        self._replicas[replica.replica_id] = replica
        self._received_at[replica.replica_id] = now
        self._live_gauge.ensure_running()
        for fingerprint in unservable or ():
            self._unservable.setdefault(fingerprint, None)
        while len(self._unservable) > MAX_UNSERVABLE:
            self._unservable.pop(next(iter(self._unservable)))
        answer = {"desired": None, "unservable": list(self._unservable)}
        if self._loop is None:
            return answer
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        desired = self._loop.report(replica, now)
        answer["desired"] = {"gpu": sorted(desired.gpu), "cpu": sorted(desired.cpu)}
        if self._scaling is not None and self._scale_state.target:
            answer["target_replicas"] = self._scale_state.target
        return answer

    async def _tick_forever(self) -> None:
        """Fold reports into the demand estimate and re-plan every placement period."""
        while True:
            now = time.monotonic()
            if self._loop.tick(now):
                metrics.record_placement_pass(self._loop.last_plan_s, self._loop.last_actions)
            if self._scaling is not None:
                self._decide_scale(now)
            await asyncio.sleep(self.report_period_s)

    def _decide_scale(self, now: float) -> None:
        profile, settings = self._scaling
        live = self._live()
        serving = [s for s in live if s.healthy and not s.draining]
        previous = self._scale_state
        snapshot = FleetSnapshot(
            now=now,
            replicas=tuple(live),
            demand=self._loop.estimator.rates(),
            starting=max(0, previous.target - len(serving)),
            fleet_queue=self._held_back_now(now),
            # Ray Serve stops the newest replicas first (on one node; across nodes it
            # first empties the node with the fewest replicas): the drain is chosen from them.
            removable=tuple(s.replica_id for s in sorted(serving, key=lambda s: -(s.started_at or 0.0))),
        )
        decision, self._scale_state = decide(snapshot, profile, settings, previous)
        metrics.record_autoscaling(decision.target, decision.needs.binding if decision.needs else None)
        if decision.target != previous.target:
            drains = ", ".join(f"{d.replica_id} ({d.why})" for d in decision.drain)
            logger.info("autoscaling: %s%s", decision.reason, f"; draining {drains}" if drains else "")

    def _held_back_now(self, now: float) -> int:
        cutoff = now - INGRESS_REPORT_TTL_S
        for ingress in [i for i, (at, _) in self._held_back.items() if at < cutoff]:
            del self._held_back[ingress]
        return sum(count for _, count in self._held_back.values())

    async def placement(self) -> dict:
        """The current desired placement: replica -> adapters per tier, and the plan count."""
        if self._loop is None:
            return {"enabled": False, "plans": 0, "replicas": {}}
        desired = self._loop.desired
        return {
            "enabled": True,
            "plans": self._loop.plans,
            "replicas": {rid: {"gpu": sorted(p.gpu), "cpu": sorted(p.cpu)} for rid, p in desired.items()},
        }

    def _live(self) -> list[ReplicaStats]:
        cutoff = time.monotonic() - STALE_AFTER_PERIODS * self.report_period_s
        for rid in [rid for rid, at in self._received_at.items() if at < cutoff]:
            del self._replicas[rid], self._received_at[rid]
        return [self._replicas[rid] for rid in sorted(self._replicas)]

    async def snapshot(self) -> list[dict]:
        return [s.to_dict() for s in self._live()]

    async def record_aborted_usage(self, reports: list[AbortedUsage]) -> None:
        """From an engine replica: what it produced for requests whose clients left."""
        for report in reports:
            held = self._aborted.setdefault(report.ingress_id, [])
            held.append(report)
            del held[:-MAX_ABORT_REPORTS_PER_INGRESS]
            self._aborted_ready.setdefault(report.ingress_id, asyncio.Event()).set()

    async def take_aborted_usage(self, ingress_id: str, wait_s: float = 5.0, held_back: int = 0) -> list[AbortedUsage]:
        """For an ingress replica: its reports, waiting up to `wait_s` for the first.
        `held_back`: requests it holds without an engine seat, plus those it refused
        since its last call (demand the fleet did not take: the autoscaler's queue signal)."""
        self._held_back[ingress_id] = (time.monotonic(), max(0, int(held_back)))
        ready = self._aborted_ready.setdefault(ingress_id, asyncio.Event())
        if not self._aborted.get(ingress_id):
            try:
                await asyncio.wait_for(ready.wait(), timeout=wait_s)
            except asyncio.TimeoutError:
                pass
        ready.clear()
        return self._aborted.pop(ingress_id, [])
