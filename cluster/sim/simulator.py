"""The discrete-event simulator: a fleet of simulated replicas behind the real router,
optionally the real placement controller, and optionally an autoscaler.

Same code as the live system, by construction: requests are ranked by
`cluster.routing.make_policy(...)` over a `ClusterView` rebuilt from replica stats
every `stats_period_s` (stale in between, as Ray Serve's routing stats are), with the
router's own `InflightTracker`; the controller is `cluster.placement.PlacementLoop`,
fed the replicas' reports every `controller_tick_s`; lorafleet's autoscaler is
`cluster.autoscaling.decide` (see scalers.py). Only the engines are simulated (see
replica.py), and Ray Serve's default autoscaler is re-implemented (ray_autoscaler.py).

Router behaviour modelled after Ray Serve: the first ranked replica under
`max_ongoing_requests` takes the request; when no ranked replica will take it, the
request waits in the router's queue (the fleet's queue) and is retried, oldest
first, whenever a request finishes or the view changes.

Fleet size: fixed, or changed by an autoscaler every `period_s` of its own. A replica
asked for is paid from that moment and starts serving `startup_s` later; a replica
to remove is drained: routers stop sending to it, it finishes every request it runs
or holds, then it leaves (paid until then). Nothing is ever dropped, which the run
checks (every generated request completes exactly once). With the placement
controller, a replica that comes up is planned at once and starts with its planned
adapters already read (a replica can pull them from the store while its engine
starts; the reads count as planned store loads).

Yardsticks (SimResult): requests arriving after `warmup_s` are measured. Rates are
per second of the span from `warmup_s` to the last completion, so a policy that
leaves a long drain tail after the last arrival pays for it; replica-seconds are
integrated over the same span. The replica lower bound is the measured requests'
work at the cheapest possible step (full batch, no LoRA; see `CostModel.
token_s_at_full_batch`), which no schedule beats.

Events sit in one heap of (time, seq, kind, target, arg); `seq` breaks time ties in
insertion order, which with seeded random streams makes a run fully reproducible.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from random import Random
from typing import TYPE_CHECKING, Protocol

from cluster.placement import PlacementLoop, PlacementSettings
from cluster.routing import ClusterView, InflightTracker, RoutingSettings, make_policy
from cluster.routing.policy import RoutingPolicy
from cluster.sim.catalog import Catalog
from cluster.sim.cost import CostModel
from cluster.sim.policies import PolicySpec, parse_policy
from cluster.sim.replica import SimReplica, SimRequest
from cluster.sim.workload import Request, WorkloadSpec, adapter_names, generate

if TYPE_CHECKING:
    from cluster.autoscaling import AutoscalingSettings
    from cluster.sim.ray_autoscaler import RayAutoscalingConfig

_ARRIVAL, _STEP, _LOAD, _STATS, _CONTROL, _SCALE, _READY, _WARM, _SAMPLE = range(9)
_SAMPLE_S = 10.0  # how often host-memory residency is sampled
_SCAN = 64  # router-queue entries tried per retry


@dataclass(frozen=True)
class SimConfig:
    """The simulated fleet and how it is run (the workload is separate).

    `replicas` is the fleet's size, or its starting size under an autoscaler.
    `max_ongoing_requests` (Ray Serve's per-replica cap) defaults to the engine's
    `max_num_seqs`, the usual production setting: a replica then never holds more
    requests than one batch, and the rest wait at the router, where they can still
    go to whichever replica frees up first.
    """

    replicas: int = 16
    cost: CostModel = field(default_factory=CostModel.gpu_like)
    stats_period_s: float = 0.5
    controller_tick_s: float = 1.0
    max_ongoing_requests: int | None = None
    ttft_slo_s: float = 1.0
    warmup_s: float = 0.0
    seed: int = 0
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    startup_s: float = 50.0
    autoscaling: AutoscalingSettings | None = None
    ray_autoscaling: RayAutoscalingConfig | None = None
    timeline_s: float = 0.0  # > 0: record arrivals, SLO attainment and replicas per bucket

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.stats_period_s <= 0 or self.controller_tick_s <= 0:
            raise ValueError("need replicas >= 1 and positive periods")
        if self.max_ongoing_requests is None:
            object.__setattr__(self, "max_ongoing_requests", self.cost.max_num_seqs)
        if self.max_ongoing_requests < 1:  # type: ignore[operator]
            raise ValueError("max_ongoing_requests must be >= 1")
        if self.startup_s < 0 or self.timeline_s < 0:
            raise ValueError("startup_s and timeline_s must be >= 0")


@dataclass
class SimResult:
    """One policy's run on one seed. See the module docstring for the yardsticks."""

    policy: str
    seed: int
    replicas: int  # at the start
    adapters: int
    offered_rps: float
    requests: int
    completed: int
    measured: int
    span_s: float  # warmup -> last completion
    drain_s: float  # last arrival -> last completion
    throughput_rps: float
    output_tps: float
    goodput_rps: float
    goodput_tps: float
    slo_attainment: float
    ttft_slo_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    ttft_mean_s: float
    e2e_p50_s: float
    e2e_p99_s: float
    store_loads: int
    gpu_loads: int
    loads_per_1k: float
    gpu_loads_per_1k: float
    busy_fraction: float  # of paid replica-seconds
    router_queued: int
    replica_seconds: float
    replica_seconds_per_1k_requests: float
    mean_replicas: float
    peak_replicas: int
    replica_seconds_lower_bound_per_1k: float
    host_copies_per_adapter: float = 0.0  # host slots used / distinct adapters held, sampled
    host_distinct_adapters: float = 0.0  # distinct adapters in the fleet's host memory, mean
    scale_ups: int = 0
    scale_downs: int = 0
    plans: int = 0
    plan_ms_mean: float = 0.0
    plan_ms_max: float = 0.0
    planned_store_loads: int = 0  # store reads no request waited for (preloading)
    wall_s: float = 0.0
    events: int = 0
    timeline: dict[str, list[float]] | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Scaler(Protocol):
    """An autoscaler as the simulator drives it (see scalers.py)."""

    period_s: float

    def decide(self, sim: Simulator, now: float) -> tuple[int, Sequence[str]]:
        """-> (target replica count, replica ids to drain first if it is lower)."""


def replica_id(i: int) -> str:
    return f"replica-{i:04d}"


class Simulator:
    """One run of one policy on one workload. `run()` once; it returns a SimResult.

    `policy` is a name (see policies.py) or a PolicySpec.
    """

    def __init__(
        self,
        config: SimConfig,
        workload: WorkloadSpec,
        policy: str | PolicySpec,
        *,
        trace: Sequence[Request] | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        """`trace` replays given requests (sorted by arrival) instead of generating
        the workload's; the workload then only labels the result."""
        self.config = config
        self.workload = workload
        self.trace = list(trace) if trace is not None else None
        self.spec = parse_policy(policy) if isinstance(policy, str) else policy
        self.policy_name = self.spec.name
        self.cost = config.cost
        self.catalog = catalog or Catalog()
        self.rng = Random(f"{config.seed}:router")
        self.max_ongoing: int = config.max_ongoing_requests  # type: ignore[assignment]
        self.replicas: dict[str, SimReplica] = {}
        self.order: list[SimReplica] = []
        self.starting: dict[str, float] = {}  # replica id -> when it is ready
        self._next_id = itertools.count()
        self.inflight = InflightTracker()
        self.loop: PlacementLoop | None = (
            PlacementLoop(config.placement, self.catalog.costs) if self.spec.controller else None
        )
        self.placement_table: dict[str, tuple[str, ...]] = {}
        self.policy: RoutingPolicy = make_policy(self.spec.routing, config.routing)
        self.scaler: Scaler | None = self._make_scaler()
        self.view = ClusterView()

        self._heap: list[tuple[float, int, int, object, int]] = []
        self._seq = itertools.count()
        self.now = 0.0
        self.backlog: deque[SimRequest] = deque()
        self._drain = False
        self.arrived = 0
        self.completed = 0
        self.router_queued = 0
        self.warmup = config.warmup_s
        # per request (by id): arrival and TTFT, for percentiles and the timeline
        self._arrival = array("d")
        self._ttft_all = array("d")
        self._e2e = array("d")
        self._measured_tokens = 0
        self._measured_good = 0
        self._measured_good_tokens = 0
        self._last_arrival = 0.0
        self._last_finish = 0.0
        self.prompt_tokens = 0  # of every arrived request: the autoscaler's mean prompt
        self.base_requests = 0  # base-model arrivals and their output tokens
        self.base_tokens = 0
        self._work_s = 0.0  # lower-bound replica-seconds of the measured requests
        self._token_s = config.cost.token_s_at_full_batch()
        self._store_loads = 0
        self._gpu_loads = 0
        self._busy = 0.0
        self._plan_s: list[float] = []
        self._planned_store_loads = 0
        self._paid: list[tuple[float, int]] = []  # (time, paid replicas from then on)
        self._fresh: list[SimReplica] = []  # came up, not planned yet
        self._host_samples: list[tuple[int, int]] = []  # (host slots used, distinct adapters)
        self.scale_ups = 0
        self.scale_downs = 0
        self.events = 0
        self._next: Request | None = None
        self._trace_done = False

        for _ in range(config.replicas):
            self._add_replica(0.0)
        self._record_paid(0.0)

    # ---- setup -------------------------------------------------------------------------

    def _make_scaler(self) -> Scaler | None:
        if self.spec.autoscaler is None:
            return None
        from cluster.sim import scalers  # the autoscalers import the simulator's types

        return scalers.make_scaler(self)

    def _new_replica(self, rid: str) -> SimReplica:
        return SimReplica(rid, self.cost, self, costs=self.catalog.costs, load_s=self.catalog.load_s)

    def _add_replica(self, now: float) -> SimReplica:
        rep = self._new_replica(replica_id(next(self._next_id)))
        self.replicas[rep.id] = rep
        self.order.append(rep)
        return rep

    # ---- scheduling (the ReplicaHost protocol) ---------------------------------------------

    def schedule_step(self, at: float, replica: SimReplica) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), _STEP, replica, replica.epoch))

    def schedule_load_done(self, at: float, replica: SimReplica) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), _LOAD, replica, 0))

    def count_load(self, now: float, *, store: bool, planned: bool) -> None:
        """A load started: `store` for a read from the store (else a host-to-GPU
        copy), `planned` when no request waits for it (placement preloading)."""
        if now >= self.warmup:
            if store:
                self._store_loads += 1
                self._planned_store_loads += planned
            else:
                self._gpu_loads += 1

    def count_busy(self, start: float, end: float) -> None:
        start = max(start, self.warmup)
        if end > start:
            self._busy += end - start

    def complete(self, req: SimRequest, now: float) -> None:
        if req.finish is not None:
            raise AssertionError(f"request {req.id} completed twice")
        req.finish = now
        self.completed += 1
        self._last_finish = max(self._last_finish, now)
        self.inflight.on_finish(req.replica, req.adapter)  # type: ignore[arg-type]
        if self.backlog:
            self._drain = True
        ttft = req.first_token - req.arrival  # type: ignore[operator]
        self._ttft_all[req.id] = ttft
        if req.arrival >= self.warmup:
            self._e2e.append(now - req.arrival)
            self._measured_tokens += req.output
            if ttft <= self.config.ttft_slo_s:
                self._measured_good += 1
                self._measured_good_tokens += req.output

    # ---- fleet size --------------------------------------------------------------------

    def active(self) -> list[SimReplica]:
        """Replicas serving and taking new requests (not draining)."""
        return [r for r in self.order if not r.draining]

    def paid(self) -> int:
        return len(self.order) + len(self.starting)

    def _record_paid(self, now: float) -> None:
        n = self.paid()
        if self._paid and self._paid[-1][0] == now:
            self._paid[-1] = (now, n)
        elif not self._paid or self._paid[-1][1] != n:
            self._paid.append((now, n))

    def scale_to(self, target: int, drain_first: Sequence[str], now: float) -> None:
        """Move toward `target` replicas (active + starting): start new ones, or
        cancel starts (newest first, as Ray Serve stops pending replicas first), then
        drain `drain_first` in order, then the newest active ones."""
        current = len(self.active()) + len(self.starting)
        if target > current:
            self.scale_ups += 1
            for _ in range(target - current):
                rid = replica_id(next(self._next_id))
                self.starting[rid] = now + self.config.startup_s
                heapq.heappush(self._heap, (now + self.config.startup_s, next(self._seq), _READY, rid, 0))
        elif target < current:
            self.scale_downs += 1
            excess = current - target
            for rid in sorted(self.starting, reverse=True):
                if excess == 0:
                    break
                del self.starting[rid]
                excess -= 1
            active = {r.id: r for r in self.active()}
            victims = [rid for rid in drain_first if rid in active]
            victims += [r.id for r in reversed(self.active()) if r.id not in victims]
            for rid in victims[:excess]:
                active[rid].drain(now)
            if excess:
                self._publish_stats()  # routers stop sending to a draining replica at once
        self._record_paid(now)

    def _ready(self, rid: str) -> None:
        if self.starting.pop(rid, None) is None:
            return  # cancelled while starting
        rep = self._new_replica(rid)
        self.replicas[rid] = rep
        self.order.append(rep)
        if self.loop is not None and self.spec.plan:
            if not self._fresh:  # one plan for every replica that comes up now
                heapq.heappush(self._heap, (self.now, next(self._seq), _WARM, None, 0))
            self._fresh.append(rep)
        self._publish_stats()  # Ray Serve lists a replica for routing once it is running
        self._drain = bool(self.backlog)

    def _warm_start(self) -> None:
        """Plan the replicas that just came up and give them their planned adapters,
        read while their engines started."""
        loop = self.loop
        assert loop is not None
        now = self.now
        fresh, self._fresh = self._fresh, []
        for r in self.order:
            loop.report(r.stats(now, with_counters=True), now)
        loop.tick(now, force_plan=True)
        self._plan_s.append(loop.last_plan_s)
        for r in fresh:
            p = loop.desired.for_replica(r.id)
            gpu = sorted(p.gpu)[: self.cost.gpu_slots]
            cpu = sorted(p.cpu)[: max(0, self.cost.cpu_slots - len(gpu))]
            r.preload(gpu, cpu)
            for _ in range(len(gpu) + len(cpu)):
                self.count_load(now, store=True, planned=True)
        self._apply_plan(now)

    def _remove_drained(self) -> None:
        gone = [r for r in self.order if r.drained()]
        if not gone:
            return
        for r in gone:
            self.order.remove(r)
            del self.replicas[r.id]
            self.inflight.forget(r.id)
        self._record_paid(self.now)

    # ---- routing -----------------------------------------------------------------------

    def _route(self, req: SimRequest) -> bool:
        ranked = self.policy.rank(req.adapter, self.view, self.inflight, self.rng, self.now - req.arrival)
        limit = self.max_ongoing
        inflight = self.inflight
        for rid in ranked:
            if inflight.count(rid) < limit:
                rep = self.replicas.get(rid)
                if rep is None or rep.draining:
                    continue  # the view is up to one stats period old
                inflight.on_assign(rid, req.adapter)
                req.replica = rid
                req.routed = self.now
                rep.enqueue(req, self.now)
                return True
        return False

    def _drain_backlog(self) -> None:
        """Retry what waits at the router, oldest first. A request no replica takes
        now keeps its place and the next one is tried (up to _SCAN of them), as Ray
        Serve's router hands a freed replica the oldest request that can use it;
        stop early once every serving replica is at its in-flight cap."""
        self._drain = False
        backlog = self.backlog
        if not backlog:
            return
        capacity = self.max_ongoing * sum(1 for r in self.order if not r.draining)
        kept: list[SimRequest] = []
        scanned = 0
        while backlog and scanned < _SCAN and self.inflight.total() < capacity:
            req = backlog.popleft()
            scanned += 1
            if not self._route(req):
                kept.append(req)
        backlog.extendleft(reversed(kept))

    # ---- periodic work -----------------------------------------------------------------

    def _publish_stats(self) -> None:
        now = self.now
        self.view = ClusterView(
            [r.stats(now) for r in self.order], placement=self.placement_table or None
        )

    def _control(self) -> None:
        loop = self.loop
        assert loop is not None
        now = self.now
        for r in self.order:
            loop.report(r.stats(now, with_counters=True), now)
        if not self.spec.plan:
            loop.observe(now)  # demand estimates for the autoscaler, no plan
            return
        if not loop.tick(now):
            return
        self._plan_s.append(loop.last_plan_s)
        self._apply_plan(now)

    def _apply_plan(self, now: float) -> None:
        loop = self.loop
        assert loop is not None
        desired = loop.desired
        for r in self.order:
            if r.draining:
                continue
            p = desired.for_replica(r.id)
            if p.gpu != r.desired_gpu or p.cpu != r.desired_cpu:
                r.set_desired(p.gpu, p.cpu, now)
        self.placement_table = desired.table()
        self.view = self.view.with_placement(self.placement_table)

    def _scale(self) -> None:
        assert self.scaler is not None
        target, drain_first = self.scaler.decide(self, self.now)
        self.scale_to(target, drain_first, self.now)

    def _sample_host(self) -> None:
        """Host memory in use across the fleet and how many distinct adapters fill it:
        their ratio is how many copies the fleet keeps of each adapter it holds."""
        used = 0
        distinct: set[str] = set()
        for r in self.order:
            used += len(r.host)
            distinct.update(r.host)
        self._host_samples.append((used, len(distinct)))

    def _check_progress(self) -> None:
        """Fail loudly instead of ticking forever if requests are stuck: all arrived,
        some unfinished, and no replica has anything under way that could finish
        them, and none is on its way."""
        if not self._trace_done or self.completed == self.arrived or self.starting:
            return
        if not all(r.idle() for r in self.order):
            return
        if self.backlog and self.active():
            self._drain_backlog()  # an idle replica may take what waits at the router
            if not all(r.idle() for r in self.order):
                return
        stuck = {r.id: sorted(map(str, r.waiting)) for r in self.order if r.n_waiting}
        raise AssertionError(
            f"simulation stalled at t={self.now:.1f}s: {self.arrived - self.completed} "
            f"requests unfinished, {len(self.backlog)} in the router queue, waiting on "
            f"replicas: {stuck}"
        )

    # ---- the loop ----------------------------------------------------------------------

    def _busy_work(self) -> bool:
        return not self._trace_done or self.completed < self.arrived

    def run(self) -> SimResult:
        started = time.perf_counter()
        trace = iter(self.trace) if self.trace is not None else generate(self.workload)
        expected = len(self.trace) if self.trace is not None else self.workload.requests
        heap = self._heap
        push = heapq.heappush
        pop = heapq.heappop
        seq = self._seq
        free = self.spec.adapters_free
        token_s = self._token_s
        prefill = self.cost.prefill_per_token_s
        config = self.config

        def next_arrival() -> None:
            r = next(trace, None)
            self._next = r
            if r is None:
                self._trace_done = True
            else:
                push(heap, (r.arrival_s, next(seq), _ARRIVAL, None, 0))

        # stats, the controller and the autoscaler go first at t=0: the router needs a view
        push(heap, (0.0, next(seq), _STATS, None, 0))
        if self.loop is not None:
            push(heap, (0.0, next(seq), _CONTROL, None, 0))
        if self.scaler is not None:
            push(heap, (self.scaler.period_s, next(seq), _SCALE, None, 0))
        push(heap, (max(self.warmup, _SAMPLE_S), next(seq), _SAMPLE, None, 0))
        next_arrival()

        events = 0
        while heap:
            t, _, kind, target, arg = pop(heap)
            self.now = t
            events += 1
            if kind == _STEP:
                target.step_done(t, arg)  # type: ignore[union-attr]
            elif kind == _ARRIVAL:
                r = self._next
                assert r is not None
                req = SimRequest(
                    self.arrived, r.arrival_s, None if free else r.adapter, r.prompt_tokens, r.output_tokens
                )
                self.arrived += 1
                self._arrival.append(t)
                self._ttft_all.append(math.nan)
                self._last_arrival = t
                self.prompt_tokens += r.prompt_tokens
                if req.adapter is None:
                    self.base_requests += 1
                    self.base_tokens += r.output_tokens
                if t >= self.warmup:
                    self._work_s += r.prompt_tokens * prefill + r.output_tokens * token_s
                next_arrival()
                if self.backlog or not self._route(req):
                    self.backlog.append(req)
                    self.router_queued += 1
            elif kind == _LOAD:
                target.load_done(t)  # type: ignore[union-attr]
            elif kind == _STATS:
                self._check_progress()
                self._remove_drained()
                self._publish_stats()
                self._drain = bool(self.backlog)
                if self._busy_work():
                    push(heap, (t + config.stats_period_s, next(seq), _STATS, None, 0))
            elif kind == _CONTROL:
                self._control()
                if self._busy_work():
                    push(heap, (t + config.controller_tick_s, next(seq), _CONTROL, None, 0))
            elif kind == _SCALE:
                if self._busy_work():
                    self._scale()
                    push(heap, (t + self.scaler.period_s, next(seq), _SCALE, None, 0))  # type: ignore[union-attr]
            elif kind == _READY:
                self._ready(target)  # type: ignore[arg-type]
            elif kind == _WARM:
                self._warm_start()
            elif kind == _SAMPLE:
                self._sample_host()
                if self._busy_work():
                    push(heap, (t + _SAMPLE_S, next(seq), _SAMPLE, None, 0))
            if self._drain:
                self._drain_backlog()
        self.events = events

        if self.completed != self.arrived or self.arrived != expected:
            raise AssertionError(
                f"conservation: {expected} generated, {self.arrived} arrived, "
                f"{self.completed} completed"
            )
        return self._result(time.perf_counter() - started)

    # ---- results -----------------------------------------------------------------------

    def replica_seconds(self, start: float, end: float) -> float:
        """Paid replicas integrated over [start, end]: starting, serving and draining
        ones alike."""
        total = 0.0
        points = self._paid + [(math.inf, 0)]
        for (t0, n), (t1, _) in zip(points, points[1:]):
            lo, hi = max(t0, start), min(t1, end)
            if hi > lo:
                total += n * (hi - lo)
        return total

    def _result(self, wall_s: float) -> SimResult:
        end = max(self._last_finish, self.warmup)
        span = max(end - self.warmup, 1e-9)
        measured_ttft = sorted(
            ttft for arrival, ttft in zip(self._arrival, self._ttft_all) if arrival >= self.warmup
        )
        measured = len(measured_ttft)
        e2e = sorted(self._e2e)
        slo = self.config.ttft_slo_s
        per_k = 1000.0 / measured if measured else 0.0
        plan_ms = [s * 1000 for s in self._plan_s]
        replica_s = self.replica_seconds(self.warmup, end)
        floor = getattr(self.scaler, "min_replicas", 1)  # a fleet never has fewer
        lower = max(self._work_s, floor * max(self._last_arrival - self.warmup, 0.0))
        return SimResult(
            policy=self.policy_name,
            seed=self.config.seed,
            replicas=self.config.replicas,
            adapters=self.workload.adapters,
            offered_rps=self.workload.rate,
            requests=self.arrived,
            completed=self.completed,
            measured=measured,
            span_s=span,
            drain_s=max(0.0, end - self._last_arrival),
            throughput_rps=measured / span,
            output_tps=self._measured_tokens / span,
            goodput_rps=self._measured_good / span,
            goodput_tps=self._measured_good_tokens / span,
            slo_attainment=self._measured_good / measured if measured else 0.0,
            ttft_slo_s=slo,
            ttft_p50_s=_percentile(measured_ttft, 0.50),
            ttft_p99_s=_percentile(measured_ttft, 0.99),
            ttft_mean_s=sum(measured_ttft) / measured if measured else 0.0,
            e2e_p50_s=_percentile(e2e, 0.50),
            e2e_p99_s=_percentile(e2e, 0.99),
            store_loads=self._store_loads,
            gpu_loads=self._gpu_loads,
            loads_per_1k=self._store_loads * per_k,
            gpu_loads_per_1k=self._gpu_loads * per_k,
            busy_fraction=min(1.0, self._busy / replica_s) if replica_s else 0.0,
            router_queued=self.router_queued,
            replica_seconds=replica_s,
            replica_seconds_per_1k_requests=replica_s * per_k,
            mean_replicas=replica_s / span,
            peak_replicas=max(n for _, n in self._paid),
            replica_seconds_lower_bound_per_1k=lower * per_k,
            host_copies_per_adapter=(
                sum(u for u, _ in self._host_samples) / max(1, sum(d for _, d in self._host_samples))
            ),
            host_distinct_adapters=(
                sum(d for _, d in self._host_samples) / len(self._host_samples) if self._host_samples else 0.0
            ),
            scale_ups=self.scale_ups,
            scale_downs=self.scale_downs,
            plans=len(plan_ms),
            plan_ms_mean=sum(plan_ms) / len(plan_ms) if plan_ms else 0.0,
            plan_ms_max=max(plan_ms, default=0.0),
            planned_store_loads=self._planned_store_loads,
            wall_s=wall_s,
            events=self.events,
            timeline=self._timeline(end) if self.config.timeline_s > 0 else None,
        )

    def _timeline(self, end: float) -> dict[str, list[float]]:
        """Per bucket of `timeline_s` (by arrival time): requests, the share within
        the SLO, and the paid replicas at the bucket's start."""
        width = self.config.timeline_s
        buckets = int(end // width) + 1
        arrivals = [0] * buckets
        good = [0] * buckets
        slo = self.config.ttft_slo_s
        for arrival, ttft in zip(self._arrival, self._ttft_all):
            b = int(arrival // width)
            arrivals[b] += 1
            good[b] += ttft <= slo
        replicas = []
        i = 0
        for b in range(buckets):
            t = b * width
            while i + 1 < len(self._paid) and self._paid[i + 1][0] <= t:
                i += 1
            replicas.append(self._paid[i][1])
        return {
            "t": [b * width for b in range(buckets)],
            "requests": arrivals,
            "slo_attainment": [g / n if n else 1.0 for g, n in zip(good, arrivals)],
            "replicas": replicas,
        }


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def simulate(
    config: SimConfig,
    workload: WorkloadSpec,
    policy: str | PolicySpec,
    *,
    trace: Sequence[Request] | None = None,
    catalog: Catalog | None = None,
) -> SimResult:
    """Run `policy` on the workload's trace (or on `trace`) and return its result."""
    return Simulator(config, workload, policy, trace=trace, catalog=catalog).run()


def default_names(workload: WorkloadSpec) -> list[str]:
    return adapter_names(workload.adapters)
