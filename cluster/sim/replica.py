"""One simulated engine replica: continuous batching, LoRA slots, adapter loads.

What it models, after vLLM:
- Continuous batching: every step advances every running request by one token; a
  waiting request joins at a step boundary if the batch has room (max_num_seqs) and
  its adapter sits in a GPU slot. The step that admits requests also pays their
  prefill. A request's first token comes at the end of that step.
- LoRA slots: at most `gpu_slots` adapters on the GPU, so at most that many distinct
  adapters in a batch. An adapter with running requests is never evicted. A request
  whose adapter is not on the GPU waits for a load; the loader is serialized (one
  load at a time per replica), reads from the store into host memory when the
  adapter is not there already, then copies it into a slot.
- Host memory: an LRU of `cpu_slots` adapters including the GPU ones (vLLM's
  max_cpu_loras).
- Placement: the controller's desired set is preloaded in the background when a
  slot can be freed without disturbing running work, and desired GPU adapters are
  evicted by on-demand loads only when nothing else can go (a soft pin).
- Adapter costs: each adapter may have its own relative step cost (rank and target
  modules, `cluster.lora_cost`) and its own store read time (its size); both come
  from the scenario's adapter catalog, defaults from the cost model.
- Draining: a replica told to drain takes no new requests (the router stops seeing
  it), finishes what it runs and holds, and then tells its host it is empty.

The replica talks to the simulator only through `ReplicaHost` (scheduling its own
events and reporting loads, busy time and completions), so it can be driven by
anything that implements those five calls: a test, or another simulator.

Why steps are simulated in runs ("macro-steps"): with a constant batch, the time to
the next completion is known (k steps of equal length), so one event covers k steps.
A run is cut short at the next step boundary only when something could join the
batch (an arrival with room, a finished load). At 1,000 replicas that is what keeps
a million requests to a few million events instead of a hundred million steps.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import Protocol

from cluster.sim.cost import CostModel
from cluster.stats import ReplicaStats

_NO_COSTS: Mapping[str, float] = {}


class SimRequest:
    __slots__ = (
        "id",
        "arrival",
        "adapter",
        "prompt",
        "output",
        "replica",
        "first_token",
        "finish",
        "finish_step",
        "routed",
    )

    def __init__(self, rid: int, arrival: float, adapter: str | None, prompt: int, output: int):
        self.id = rid
        self.arrival = arrival
        self.adapter = adapter
        self.prompt = prompt
        self.output = output
        self.replica: str | None = None
        self.routed: float | None = None
        self.first_token: float | None = None
        self.finish: float | None = None
        self.finish_step = 0


class ReplicaHost(Protocol):
    """What a simulated replica needs from whoever runs it."""

    def schedule_step(self, at: float, replica: SimReplica) -> None:
        """Call `replica.step_done(at, epoch)` at `at` (with the replica's epoch now)."""

    def schedule_load_done(self, at: float, replica: SimReplica) -> None:
        """Call `replica.load_done(at)` at `at`."""

    def count_load(self, now: float, *, store: bool, planned: bool) -> None:
        """A load started: from the store (else host -> GPU); planned: nobody waits."""

    def count_busy(self, start: float, end: float) -> None:
        """The replica was stepping from `start` to `end`."""

    def complete(self, req: SimRequest, now: float) -> None:
        """`req` produced its last token at `now`."""


# Load kinds: into a GPU slot on demand (requests wait for it), into a GPU slot or
# host memory because the placement wants it (nothing waits).
_URGENT, _BACKGROUND = 0, 1


class SimReplica:
    """One engine replica. `costs` maps an adapter to its relative step cost (default
    1.0), `load_s` to its store read time (default the cost model's)."""

    def __init__(
        self,
        replica_id: str,
        cost: CostModel,
        host: ReplicaHost,
        *,
        costs: Mapping[str, float] = _NO_COSTS,
        load_s: Mapping[str, float] = _NO_COSTS,
    ) -> None:
        self.id = replica_id
        self.cost = cost
        self.runner = host
        self.costs = costs
        self.load_s = load_s
        self.healthy = True
        self.draining = False
        # residency, least recently used first
        self.gpu: OrderedDict[str, None] = OrderedDict()
        self.host: OrderedDict[str, None] = OrderedDict()
        self.desired_gpu: frozenset[str] = frozenset()
        self.desired_cpu: frozenset[str] = frozenset()
        # loads
        self.loading: str | None = None  # the adapter the loader is working on
        self.loading_to_gpu = False
        self.urgent: deque[str] = deque()
        self.background: deque[tuple[str, bool]] = deque()  # (adapter, to_gpu)
        self.queued: set[str] = set()
        # requests
        self.waiting: dict[str | None, deque[SimRequest]] = {}
        self.n_waiting = 0
        self.running: list[tuple[int, int, SimRequest]] = []  # heap of (finish_step, id, req)
        self.running_per_adapter: dict[str | None, int] = {}
        self.n_running = 0
        # LoRA work in the batch, in units of relative cost: over distinct adapters,
        # and over sequences (see CostModel.step_s)
        self.lora_adapters = 0.0
        self.lora_seqs = 0.0
        self.tokens_done = 0
        # the current run of steps
        self.stepping = False
        self.in_boundary = False
        self.epoch = 0
        self.run_start = 0.0
        self.run_prefill = 0.0
        self.run_step = 0.0
        self.run_steps = 0
        # counters
        self.busy_s = 0.0
        self.store_loads = 0
        self.gpu_loads = 0
        self.requests_seen: Counter[str] = Counter()
        self.tokens_seen: Counter[str] = Counter()

    # ---- residency -------------------------------------------------------------------

    def preload(self, gpu: Iterable[str], cpu: Iterable[str]) -> None:
        """Start with these adapters resident, at no cost (a warm fleet)."""
        for a in sorted(cpu):
            self._to_host(a)
        for a in sorted(gpu):
            self._to_host(a)
            self.gpu[a] = None
        if len(self.gpu) > self.cost.gpu_slots:
            raise ValueError(f"{self.id}: more preloaded GPU adapters than slots")

    def set_desired(self, gpu: frozenset[str], cpu: frozenset[str], now: float) -> None:
        """The controller's desired set: queue background loads for what is missing."""
        self.desired_gpu, self.desired_cpu = gpu, cpu
        self.background.clear()
        self.queued = set(self.urgent)
        for a in sorted(gpu):
            if a not in self.gpu and a != self.loading:
                self.background.append((a, True))
                self.queued.add(a)
        for a in sorted(cpu):
            if a not in self.host and a != self.loading and a not in self.queued:
                self.background.append((a, False))
                self.queued.add(a)
        self._start_load(now)

    def _to_host(self, a: str) -> None:
        """Put `a` in host memory (most recently used), evicting the least recently
        used adapter that is not on the GPU, not loading and, if possible, not
        desired anywhere here."""
        host = self.host
        if a in host:
            host.move_to_end(a)
            return
        if len(host) >= self.cost.cpu_slots:
            victim = None
            for b in host:
                if b in self.gpu or b == self.loading:
                    continue
                if b not in self.desired_cpu and b not in self.desired_gpu:
                    victim = b
                    break
                if victim is None:
                    victim = b
            if victim is not None:
                del host[victim]
        host[a] = None

    def _gpu_victim(self, soft_pins: bool) -> str | None:
        """The GPU adapter to evict for a load, least recently used first, among those
        with no running and no waiting requests. Desired ones only if `soft_pins`
        allows and nothing else qualifies; None when every slot is busy."""
        fallback = None
        for a in self.gpu:
            if self.running_per_adapter.get(a) or a in self.waiting:
                continue
            if a not in self.desired_gpu:
                return a
            if fallback is None:
                fallback = a
        return fallback if soft_pins else None

    def _slot_free(self) -> bool:
        return len(self.gpu) < self.cost.gpu_slots

    # ---- loads -----------------------------------------------------------------------

    def _want_load(self, a: str) -> None:
        """A request for `a` arrived and `a` is not on the GPU."""
        if a == self.loading:
            return
        if a in self.queued:
            if a in self.urgent:
                return
            # promote a background load: a request now waits for it
            self.background = deque(item for item in self.background if item[0] != a)
        self.urgent.append(a)
        self.queued.add(a)

    def _start_load(self, now: float) -> None:
        """Start the next load that can start, if the loader is idle. Urgent loads
        first; a GPU load needs a slot that is free or can be freed."""
        if self.loading is not None or not self.healthy:
            return
        for queue, urgent in ((self.urgent, True), (self.background, False)):
            i = 0
            while i < len(queue):
                item = queue[i]
                a, to_gpu = (item, True) if urgent else item
                if (to_gpu and a in self.gpu) or (not to_gpu and a in self.host) or (
                    urgent and a not in self.waiting
                ):
                    del queue[i]  # already there, or nobody waits any more
                    self.queued.discard(a)
                    continue
                if to_gpu and not self._slot_free():
                    victim = self._gpu_victim(soft_pins=urgent)
                    if victim is None:
                        break  # no slot for any GPU load of this queue now
                    del self.gpu[victim]
                del queue[i]
                self.queued.discard(a)
                self._begin(a, to_gpu, now)
                return

    def _begin(self, a: str, to_gpu: bool, now: float) -> None:
        cost = self.cost
        duration = 0.0
        if a not in self.host:
            duration += self.load_s.get(a, cost.store_load_s)
            self.store_loads += 1
            self.runner.count_load(now, store=True, planned=a not in self.waiting)
        if to_gpu:
            duration += cost.cpu_to_gpu_s
            self.gpu_loads += 1
            self.runner.count_load(now, store=False, planned=a not in self.waiting)
        self.loading = a
        self.loading_to_gpu = to_gpu
        self.runner.schedule_load_done(now + duration, self)

    def load_done(self, now: float) -> None:
        a, to_gpu = self.loading, self.loading_to_gpu
        self.loading = None
        if a is None:
            return
        self._to_host(a)
        if to_gpu:
            self.gpu[a] = None
            if a in self.waiting:
                self._wake(now)
        elif a in self.waiting:
            self._want_load(a)  # a request came while it was being warmed in host memory
        self._start_load(now)

    # ---- requests --------------------------------------------------------------------

    def enqueue(self, req: SimRequest, now: float) -> None:
        a = req.adapter
        q = self.waiting.get(a)
        if q is None:
            q = self.waiting[a] = deque()
        q.append(req)
        self.n_waiting += 1
        if a is not None:
            self.requests_seen[a] += 1
            if a not in self.gpu:
                self._want_load(a)
                self._start_load(now)
                return
        if self.n_running < self.cost.max_num_seqs:
            self._wake(now)

    def _wake(self, now: float) -> None:
        """Something could join the batch: start stepping, or end the current run of
        steps at its next boundary."""
        if self.in_boundary or self.n_running >= self.cost.max_num_seqs:
            return
        if not self.stepping:
            self._boundary(now)
            return
        if self.run_steps <= 1:
            return
        elapsed = now - self.run_start - self.run_prefill
        j = max(1, math.ceil(elapsed / self.run_step - 1e-9))
        if j >= self.run_steps:
            return
        self.run_steps = j
        self.epoch += 1
        self.runner.schedule_step(self.run_start + self.run_prefill + j * self.run_step, self)

    def step_done(self, now: float, epoch: int) -> None:
        if epoch != self.epoch or not self.stepping:
            return
        self.in_boundary = True
        self.stepping = False
        self.busy_s += now - self.run_start
        self.runner.count_busy(self.run_start, now)
        self.tokens_done += self.run_steps
        running = self.running
        done = self.tokens_done
        per_adapter = self.running_per_adapter
        costs = self.costs
        while running and running[0][0] <= done:
            _, _, req = heapq.heappop(running)
            self.n_running -= 1
            a = req.adapter
            left = per_adapter[a] - 1
            if left:
                per_adapter[a] = left
            else:
                del per_adapter[a]
            if a is not None:
                self.tokens_seen[a] += req.output
                k = costs.get(a, 1.0)
                self.lora_seqs -= k
                if not left:
                    self.lora_adapters -= k
            self.runner.complete(req, now)
        self.in_boundary = False
        self._start_load(now)
        self._boundary(now)

    def _boundary(self, now: float) -> None:
        """At a step boundary: admit what can join, then start the next run of steps."""
        cost = self.cost
        room = cost.max_num_seqs - self.n_running
        prefill_tokens = 0
        admitted = []
        if room > 0 and self.n_waiting:
            heads = []
            for a in (None, *self.gpu):
                q = self.waiting.get(a)
                if q:
                    heads.append((q[0].arrival, q[0].id, a))
            heapq.heapify(heads)
            while room > 0 and heads:
                _, _, a = heapq.heappop(heads)
                q = self.waiting[a]
                req = q.popleft()
                if q:
                    heapq.heappush(heads, (q[0].arrival, q[0].id, a))
                else:
                    del self.waiting[a]
                self.n_waiting -= 1
                room -= 1
                req.finish_step = self.tokens_done + req.output
                heapq.heappush(self.running, (req.finish_step, req.id, req))
                before = self.running_per_adapter.get(a, 0)
                self.running_per_adapter[a] = before + 1
                self.n_running += 1
                prefill_tokens += req.prompt
                admitted.append(req)
                if a is not None:
                    self.gpu.move_to_end(a)
                    self.host.move_to_end(a)
                    k = self.costs.get(a, 1.0)
                    self.lora_seqs += k
                    if not before:
                        self.lora_adapters += k
        if self.n_running == 0:
            self.lora_adapters = self.lora_seqs = 0.0  # no float drift across idle periods
            return
        step = cost.step_s(self.n_running, self.lora_adapters, self.lora_seqs)
        prefill = cost.prefill_per_token_s * prefill_tokens
        first = now + prefill + step
        for req in admitted:
            req.first_token = first
        self.stepping = True
        self.run_start = now
        self.run_prefill = prefill
        self.run_step = step
        self.run_steps = self.running[0][0] - self.tokens_done
        self.epoch += 1
        self.runner.schedule_step(now + prefill + self.run_steps * step, self)

    # ---- reporting -------------------------------------------------------------------

    def idle(self) -> bool:
        """Nothing under way: not stepping and not loading."""
        return not self.stepping and self.loading is None

    def drained(self) -> bool:
        """Draining and nothing left: no request running or waiting, no load under
        way. The host may now remove it without losing anything."""
        return self.draining and not self.n_running and not self.n_waiting and self.idle()

    def drain(self, now: float) -> None:
        """Stop preloading (the router already sends nothing new); what runs and what
        waits here finishes."""
        self.draining = True
        self.background.clear()
        self.queued = set(self.urgent)

    def stats(self, now: float, *, with_counters: bool = False) -> ReplicaStats:
        """What this replica would publish. The per-adapter counters (cumulative)
        are copied only when asked: the router does not read them, the controller
        does, less often."""
        gpu = tuple(self.gpu)
        return ReplicaStats(
            replica_id=self.id,
            gpu_slots=self.cost.gpu_slots,
            cpu_slots=self.cost.cpu_slots,
            gpu_resident=gpu,
            cpu_resident=tuple(a for a in self.host if a not in self.gpu),
            loading=(self.loading,) if self.loading is not None else (),
            queue_len=self.n_waiting,
            running=self.n_running,
            kv_cache_usage=self.n_running / self.cost.max_num_seqs,
            per_adapter_requests=dict(self.requests_seen) if with_counters else {},
            per_adapter_tokens=dict(self.tokens_seen) if with_counters else {},
            adapter_loads=self.store_loads,
            healthy=self.healthy,
            draining=self.draining,
            ts=now,
        )
