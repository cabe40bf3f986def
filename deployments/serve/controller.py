"""The fleet controller: the one place that knows every replica's latest stats, and
the placement controller that decides which replica should hold which adapter.

A single-replica Ray Serve deployment (Serve restarts it if it dies). Engine replicas
push their stats to it every `report_period_s` and get their desired adapter set back
(pull model: a replica that dies simply stops reporting, ages out, and its adapters
are re-placed at the next plan). The planning itself is the pure `PlacementLoop`
(cluster/placement), the same code the simulator runs. It holds no state replicas
cannot rebuild: a restarted controller is complete again after a few reports, and
while it is down, replicas keep serving and routers route on replica stats alone.

With several base models it keeps one `PlacementLoop` per base, with that base's
settings: a replica's stats say which base it serves (`ReplicaStats.base`), so each
base's adapters are planned only over its own replicas, with its own demand estimate
and slots, as if each base had its own controller. One deployment rather than one per
base: a report is a few hundred bytes a second per replica and a plan takes
milliseconds (bench/results), while every extra controller is another actor to keep
alive, another restart to wait for, and another channel for the aborted-usage reports
the ingress collects; bases share nothing in it but that mailbox.

With autoscaling on, it also sizes each base's engine deployment: every placement period it
runs the pure `cluster.autoscaling.decide` over that base's replicas' stats, demand
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
    def __init__(self, report_period_s: float = 1.0, placement: dict[str, dict | None] | None = None,
                 autoscaling: dict[str, dict] | None = None):
        """`placement`: base -> its placement settings (None: placement off for that base).
        `autoscaling`: base -> {settings, profile, initial} for the bases it sizes."""
        self.report_period_s = report_period_s
        self._loops: dict[str, PlacementLoop | None] = {
            base: PlacementLoop(PlacementSettings(**settings)) if settings is not None else None
            for base, settings in (placement or {}).items()
        }
        self._scaling = {
            base: (ReplicaProfile(**spec["profile"]), AutoscalingSettings(**spec["settings"]))
            for base, spec in (autoscaling or {}).items() if self._loops.get(base) is not None
        }
        self._scale_state = {base: AutoscalerState(target=spec["initial"]) for base, spec in (autoscaling or {}).items()}
        # ingress -> (when, base -> requests it holds without a seat or refused)
        self._held_back: dict[str, tuple[float, dict[str, int]]] = {}
        self._ticker: asyncio.Task | None = None
        self._replicas: dict[str, ReplicaStats] = {}
        self._received_at: dict[str, float] = {}
        self._live_gauge = metrics.LiveReplicasGauge(self._live, report_period_s, bases=list(self._loops))
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
        loop = self._loops.get(replica.base)
        if loop is None:  # placement off for its base (or a base this controller was not told of)
            return answer
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        desired = loop.report(replica, now)
        answer["desired"] = {"gpu": sorted(desired.gpu), "cpu": sorted(desired.cpu)}
        if replica.base in self._scaling:
            answer["target_replicas"] = self._scale_state[replica.base].target
        return answer

    async def _tick_forever(self) -> None:
        """Fold reports into each base's demand estimate and re-plan every placement period."""
        while True:
            now = time.monotonic()
            for base, loop in self._loops.items():
                if loop is not None and loop.tick(now):
                    metrics.record_placement_pass(loop.last_plan_s, loop.last_actions, model=base)
            for base in self._scaling:
                self._decide_scale(base, now)
            await asyncio.sleep(self.report_period_s)

    def _decide_scale(self, base: str, now: float) -> None:
        profile, settings = self._scaling[base]
        live = [s for s in self._live() if s.base == base]
        serving = [s for s in live if s.healthy and not s.draining]
        previous = self._scale_state[base]
        snapshot = FleetSnapshot(
            now=now,
            replicas=tuple(live),
            demand=self._loops[base].estimator.rates(),
            starting=max(0, previous.target - len(serving)),
            fleet_queue=self._held_back_now(base, now),
            # Ray Serve stops the newest replicas first (on one node; across nodes it
            # first empties the node with the fewest replicas): the drain is chosen from them.
            removable=tuple(s.replica_id for s in sorted(serving, key=lambda s: -(s.started_at or 0.0))),
        )
        decision, self._scale_state[base] = decide(snapshot, profile, settings, previous)
        metrics.record_autoscaling(decision.target, decision.needs.binding if decision.needs else None, model=base)
        if decision.target != previous.target:
            drains = ", ".join(f"{d.replica_id} ({d.why})" for d in decision.drain)
            logger.info("autoscaling %s: %s%s", base, decision.reason, f"; draining {drains}" if drains else "")

    def _held_back_now(self, base: str, now: float) -> int:
        cutoff = now - INGRESS_REPORT_TTL_S
        for ingress in [i for i, (at, _) in self._held_back.items() if at < cutoff]:
            del self._held_back[ingress]
        return sum(counts.get(base, 0) for _, counts in self._held_back.values())

    async def placement(self) -> dict:
        """The current desired placement: replica -> adapters per tier over every base, and
        the same per base (`bases`: base -> {enabled, plans, replicas})."""
        bases = {}
        for base, loop in self._loops.items():
            if loop is None:
                bases[base] = {"enabled": False, "plans": 0, "replicas": {}}
                continue
            bases[base] = {
                "enabled": True,
                "plans": loop.plans,
                "replicas": {rid: {"gpu": sorted(p.gpu), "cpu": sorted(p.cpu)} for rid, p in loop.desired.items()},
            }
        return {
            "enabled": any(b["enabled"] for b in bases.values()),
            "plans": sum(b["plans"] for b in bases.values()),
            "replicas": {rid: p for b in bases.values() for rid, p in b["replicas"].items()},
            "bases": bases,
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

    async def take_aborted_usage(self, ingress_id: str, wait_s: float = 5.0,
                                 held_back: dict[str, int] | None = None) -> list[AbortedUsage]:
        """For an ingress replica: its reports, waiting up to `wait_s` for the first.
        `held_back`: per base, requests it holds without an engine seat plus those it
        refused since its last call (demand the fleet did not take: the autoscaler's
        queue signal)."""
        self._held_back[ingress_id] = (time.monotonic(), {b: max(0, int(n)) for b, n in (held_back or {}).items()})
        ready = self._aborted_ready.setdefault(ingress_id, asyncio.Event())
        if not self._aborted.get(ingress_id):
            try:
                await asyncio.wait_for(ready.wait(), timeout=wait_s)
            except asyncio.TimeoutError:
                pass
        ready.clear()
        return self._aborted.pop(ingress_id, [])
