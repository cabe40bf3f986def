"""The discrete-event simulator: a fleet of simulated replicas behind the real router
and, optionally, the real placement controller.

Same code as the live system, by construction: requests are ranked by
`cluster.routing.make_policy(...)` over a `ClusterView` rebuilt from replica stats
every `stats_period_s` (stale in between, as Ray Serve's routing stats are), with the
router's own `InflightTracker`; the controller is `cluster.placement.PlacementLoop`,
fed the replicas' reports every `controller_tick_s`. Only the engines are simulated
(see replica.py).

Router behaviour modelled after Ray Serve: the first ranked replica under
`max_ongoing_requests` takes the request; when all ranked replicas are at the limit
the request waits in the router's queue and is retried, oldest first, whenever a
request finishes.

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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from random import Random

from cluster.placement import (
    AdapterDemand,
    DesiredPlacement,
    PlacementLoop,
    PlacementSettings,
    PlacementSnapshot,
    plan,
)
from cluster.routing import ClusterView, InflightTracker, RoutingSettings, make_policy
from cluster.routing.candidates import replica_load
from cluster.routing.policy import RoutingPolicy
from cluster.sim.cost import CostModel
from cluster.sim.replica import SimReplica, SimRequest
from cluster.sim.workload import Request, WorkloadSpec, generate
from cluster.stats import ReplicaStats

_ARRIVAL, _STEP, _LOAD, _STATS, _CONTROL = range(5)

CONTROLLER_SUFFIX = "+controller"
ORACLE = "oracle"


@dataclass(frozen=True)
class SimConfig:
    """The simulated fleet and how it is run (the workload is separate)."""

    replicas: int = 16
    cost: CostModel = field(default_factory=CostModel.gpu_like)
    stats_period_s: float = 0.5
    controller_tick_s: float = 1.0
    max_ongoing_requests: int | None = 128
    ttft_slo_s: float = 1.0
    warmup_s: float = 0.0
    seed: int = 0
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    placement: PlacementSettings = field(default_factory=PlacementSettings)

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.stats_period_s <= 0 or self.controller_tick_s <= 0:
            raise ValueError("need replicas >= 1 and positive periods")
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < 1:
            raise ValueError("max_ongoing_requests must be >= 1 or None")


@dataclass
class SimResult:
    """One policy's run. Rates (throughput, goodput) count completions in the window
    from `warmup_s` to the last arrival; latencies cover requests arriving after
    `warmup_s`; loads are counted after `warmup_s`, per 1,000 of those requests."""

    policy: str
    replicas: int
    adapters: int
    offered_rps: float
    requests: int
    completed: int
    measured: int
    span_s: float
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
    busy_fraction: float
    router_queued: int
    plans: int = 0
    plan_ms_mean: float = 0.0
    plan_ms_max: float = 0.0
    planned_store_loads: int = 0  # store reads no request waited for (preloading)
    wall_s: float = 0.0
    events: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class PlacementRestrictedPolicy:
    """The oracle's router: requests for a placed adapter go only to the replicas
    the static placement gave it (GPU holders, else its warm CPU holder), least
    loaded first; adapters the placement left out go through `fallback`.

    It exists to bound what placement can achieve: with hindsight rates, no moves
    and no router guesswork, what goodput does the fleet reach?
    """

    name = ORACLE

    def __init__(self, desired: DesiredPlacement, fallback: RoutingPolicy) -> None:
        gpu: dict[str, list[str]] = {}
        cpu: dict[str, list[str]] = {}
        for rid in sorted(desired):
            for a in desired[rid].gpu:
                gpu.setdefault(a, []).append(rid)
            for a in desired[rid].cpu:
                cpu.setdefault(a, []).append(rid)
        self.holders = {a: tuple(r) for a, r in cpu.items()}
        self.holders.update({a: tuple(r) for a, r in gpu.items()})
        self.fallback = fallback

    def rank(
        self, adapter: str | None, view: ClusterView, inflight: InflightTracker, rng: Random
    ) -> list[str]:
        holders = self.holders.get(adapter) if adapter else None
        if not holders:
            return self.fallback.rank(adapter, view, inflight, rng)
        keyed = [
            (replica_load(view.stats(rid), inflight.count(rid)), rng.random(), rid)
            for rid in holders
            if view.is_routable(rid)
        ]
        keyed.sort()
        return [rid for _, _, rid in keyed]


def true_demand(trace: Iterable[Request]) -> dict[str, AdapterDemand]:
    """Each adapter's average request and output-token rate over the whole trace:
    what an oracle would know in hindsight."""
    requests: dict[str, int] = {}
    tokens: dict[str, int] = {}
    last = 0.0
    for r in trace:
        last = r.arrival_s
        if r.adapter is not None:
            requests[r.adapter] = requests.get(r.adapter, 0) + 1
            tokens[r.adapter] = tokens.get(r.adapter, 0) + r.output_tokens
    span = max(last, 1e-9)
    return {a: AdapterDemand(n / span, tokens[a] / span) for a, n in sorted(requests.items())}


def replica_ids(n: int) -> list[str]:
    width = max(4, len(str(n - 1)))
    return [f"replica-{i:0{width}d}" for i in range(n)]


class Simulator:
    """One run of one policy on one workload. `run()` once; it returns a SimResult.

    `policy` is a routing policy name (`cluster.routing.POLICIES`), optionally with
    "+controller" to run the placement controller next to it, or "oracle".
    """

    def __init__(
        self,
        config: SimConfig,
        workload: WorkloadSpec,
        policy: str,
        *,
        trace: Sequence[Request] | None = None,
    ) -> None:
        """`trace` replays given requests (sorted by arrival) instead of generating
        the workload's; the workload then only labels the result."""
        self.config = config
        self.workload = workload
        self.trace = list(trace) if trace is not None else None
        self.policy_name = policy
        self.cost = config.cost
        self.rng = Random(f"{config.seed}:router")
        self.replicas = {rid: SimReplica(rid, config.cost, self) for rid in replica_ids(config.replicas)}
        self.order = list(self.replicas.values())
        self.inflight = InflightTracker()
        self.loop: PlacementLoop | None = None
        self.placement_table: dict[str, tuple[str, ...]] = {}

        routing_name = policy
        if policy.endswith(CONTROLLER_SUFFIX):
            routing_name = policy[: -len(CONTROLLER_SUFFIX)]
            self.loop = PlacementLoop(config.placement)
        if policy == ORACLE:
            desired = self._oracle_placement()
            self.policy: RoutingPolicy = PlacementRestrictedPolicy(
                desired, make_policy("adapter_affinity", config.routing)
            )
        else:
            self.policy = make_policy(routing_name, config.routing)
        self.view = ClusterView()

        self._heap: list[tuple[float, int, int, object, int]] = []
        self._seq = itertools.count()
        self.now = 0.0
        self.backlog: deque[SimRequest] = deque()
        self._drain = False
        self.arrived = 0
        self.completed = 0
        self.router_queued = 0
        # measurement
        self.warmup = config.warmup_s
        # per completed request that arrived after warmup: for percentiles
        self._ttft = array("d")
        self._e2e = array("d")
        # per completion after warmup (whenever it arrived): for window rates
        self._done_at = array("d")
        self._done_tokens = array("q")
        self._done_good = array("b")
        self._last_arrival = 0.0
        self._store_loads = 0
        self._gpu_loads = 0
        self._busy = 0.0
        self._plan_s: list[float] = []
        self._planned_store_loads = 0
        self.events = 0
        self._next = None

    # ---- setup -------------------------------------------------------------------------

    def _oracle_placement(self) -> DesiredPlacement:
        """Plan once with the true rates on an empty fleet and start every replica
        with its share already resident; the placement never changes."""
        empty = [
            ReplicaStats(rid, gpu_slots=self.cost.gpu_slots, cpu_slots=self.cost.cpu_slots, ts=0.0)
            for rid in self.replicas
        ]
        demand = true_demand(self.trace if self.trace is not None else generate(self.workload))
        desired = plan(PlacementSnapshot(empty, demand), self.config.placement)
        for rid, rep in self.replicas.items():
            p = desired.for_replica(rid)
            rep.preload(p.gpu, p.cpu)
            rep.desired_gpu, rep.desired_cpu = p.gpu, p.cpu
        self.placement_table = desired.table()
        return desired

    # ---- scheduling (called by replicas) -------------------------------------------------

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
        """Busy time inside the window [warmup, last arrival] (the end is known once
        the trace is exhausted; until then every interval is inside it)."""
        if self._next is None:
            end = min(end, self._last_arrival)
        start = max(start, self.warmup)
        if end > start:
            self._busy += end - start

    def complete(self, req: SimRequest, now: float) -> None:
        if req.finish is not None:
            raise AssertionError(f"request {req.id} completed twice")
        req.finish = now
        self.completed += 1
        self.inflight.on_finish(req.replica, req.adapter)  # type: ignore[arg-type]
        if self.backlog:
            self._drain = True
        ttft = req.first_token - req.arrival  # type: ignore[operator]
        if req.arrival >= self.warmup:
            self._ttft.append(ttft)
            self._e2e.append(now - req.arrival)
        if now >= self.warmup:
            self._done_at.append(now)
            self._done_tokens.append(req.output)
            self._done_good.append(ttft <= self.config.ttft_slo_s)

    # ---- routing -----------------------------------------------------------------------

    def _route(self, req: SimRequest) -> bool:
        ranked = self.policy.rank(req.adapter, self.view, self.inflight, self.rng)
        limit = self.config.max_ongoing_requests
        inflight = self.inflight
        for rid in ranked:
            if limit is None or inflight.count(rid) < limit:
                inflight.on_assign(rid, req.adapter)
                req.replica = rid
                req.routed = self.now
                self.replicas[rid].enqueue(req, self.now)
                return True
        return False

    def _drain_backlog(self) -> None:
        self._drain = False
        backlog = self.backlog
        while backlog and self._route(backlog[0]):
            backlog.popleft()

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
        if not loop.tick(now):
            return
        self._plan_s.append(loop.last_plan_s)
        desired = loop.desired
        for r in self.order:
            p = desired.for_replica(r.id)
            if p.gpu != r.desired_gpu or p.cpu != r.desired_cpu:
                r.set_desired(p.gpu, p.cpu, now)
        self.placement_table = desired.table()
        self.view = self.view.with_placement(self.placement_table)

    def _check_progress(self) -> None:
        """Fail loudly instead of ticking forever if requests are stuck: all arrived,
        some unfinished, and no replica has anything under way that could finish
        them."""
        if self._next is not None or self.completed == self.arrived:
            return
        if all(r.idle() for r in self.order):
            stuck = {r.id: sorted(map(str, r.waiting)) for r in self.order if r.n_waiting}
            raise AssertionError(
                f"simulation stalled at t={self.now:.1f}s: {self.arrived - self.completed} "
                f"requests unfinished, {len(self.backlog)} in the router queue, waiting on "
                f"replicas: {stuck}"
            )

    # ---- the loop ----------------------------------------------------------------------

    def _busy_work(self) -> bool:
        return self._next is not None or self.completed < self.arrived

    def run(self) -> SimResult:
        started = time.perf_counter()
        trace = iter(self.trace) if self.trace is not None else generate(self.workload)
        expected = len(self.trace) if self.trace is not None else self.workload.requests
        heap = self._heap
        push = heapq.heappush
        pop = heapq.heappop
        seq = self._seq
        ids = itertools.count()

        def next_arrival() -> None:
            r = next(trace, None)
            self._next = r
            if r is not None:
                push(heap, (r.arrival_s, next(seq), _ARRIVAL, None, 0))

        # stats and the controller go first at t=0: the router needs a view
        push(heap, (0.0, next(seq), _STATS, None, 0))
        if self.loop is not None:
            push(heap, (0.0, next(seq), _CONTROL, None, 0))
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
                req = SimRequest(next(ids), r.arrival_s, r.adapter, r.prompt_tokens, r.output_tokens)
                self.arrived += 1
                self._last_arrival = t
                next_arrival()
                if self.backlog or not self._route(req):
                    self.backlog.append(req)
                    self.router_queued += 1
            elif kind == _LOAD:
                target.load_done(t)  # type: ignore[union-attr]
            elif kind == _STATS:
                self._check_progress()
                self._publish_stats()
                self._drain = bool(self.backlog)
                if self._busy_work():
                    push(heap, (t + self.config.stats_period_s, next(seq), _STATS, None, 0))
            elif kind == _CONTROL:
                self._control()
                if self._busy_work():
                    push(heap, (t + self.config.controller_tick_s, next(seq), _CONTROL, None, 0))
            if self._drain:
                self._drain_backlog()
        self.events = events

        if self.completed != self.arrived or self.arrived != expected:
            raise AssertionError(
                f"conservation: {expected} generated, {self.arrived} arrived, "
                f"{self.completed} completed"
            )
        return self._result(time.perf_counter() - started)

    def _result(self, wall_s: float) -> SimResult:
        """Rates count completions inside the window [warmup, last arrival]: the
        steady state, neither the cold start nor the drain after the last arrival
        (which would make an idle tail look like lost throughput). Latency
        percentiles cover every request that arrived after warmup."""
        window_end = self._last_arrival
        span = max(window_end - self.warmup, 1e-9)
        done = good = tokens = good_tokens = 0
        for at, n, ok in zip(self._done_at, self._done_tokens, self._done_good, strict=True):
            if at <= window_end:
                done += 1
                tokens += n
                if ok:
                    good += 1
                    good_tokens += n
        measured = len(self._ttft)
        ttft = sorted(self._ttft)
        e2e = sorted(self._e2e)
        slo = self.config.ttft_slo_s
        per_k = 1000.0 / measured if measured else 0.0
        plan_ms = [s * 1000 for s in self._plan_s]
        return SimResult(
            policy=self.policy_name,
            replicas=self.config.replicas,
            adapters=self.workload.adapters,
            offered_rps=self.workload.rate,
            requests=self.arrived,
            completed=self.completed,
            measured=measured,
            span_s=span,
            throughput_rps=done / span,
            output_tps=tokens / span,
            goodput_rps=good / span,
            goodput_tps=good_tokens / span,
            slo_attainment=sum(1 for x in ttft if x <= slo) / measured if measured else 0.0,
            ttft_slo_s=slo,
            ttft_p50_s=_percentile(ttft, 0.50),
            ttft_p99_s=_percentile(ttft, 0.99),
            ttft_mean_s=sum(ttft) / measured if measured else 0.0,
            e2e_p50_s=_percentile(e2e, 0.50),
            e2e_p99_s=_percentile(e2e, 0.99),
            store_loads=self._store_loads,
            gpu_loads=self._gpu_loads,
            loads_per_1k=self._store_loads * per_k,
            gpu_loads_per_1k=self._gpu_loads * per_k,
            busy_fraction=min(1.0, self._busy / (span * self.config.replicas)),
            router_queued=self.router_queued,
            plans=len(plan_ms),
            plan_ms_mean=sum(plan_ms) / len(plan_ms) if plan_ms else 0.0,
            plan_ms_max=max(plan_ms, default=0.0),
            planned_store_loads=self._planned_store_loads,
            wall_s=wall_s,
            events=self.events,
        )


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def simulate(
    config: SimConfig,
    workload: WorkloadSpec,
    policy: str,
    *,
    trace: Sequence[Request] | None = None,
) -> SimResult:
    """Run `policy` on the workload's trace (or on `trace`) and return its result."""
    return Simulator(config, workload, policy, trace=trace).run()
