"""The placement planner: which adapters each replica should hold, and the actions
that take the fleet there.

Decide, then do: `plan(snapshot, settings, previous) -> DesiredPlacement` decides,
as a pure function; `diff(desired, observed) -> [Load | Unload]` lists what the
replicas must do to get there. The live controller sends each replica its desired
set (the replica reconciles itself, pulling from the store) and uses `diff` only to
count; the simulator uses both. Neither does I/O or reads a clock.

One planning pass, in order (each step's why is in its method's docstring):

1. counts   -- how many GPU copies each adapter should have: its share of the
               fleet's token rate x healthy replicas, rounded up, at least 1 above
               the demand floor, capped, at least its pin; kept at the current count
               while that is within the hysteresis factor of the ideal.
2. select   -- which adapters get GPU slots at all when slots are scarce: pins
               first, then by demand, incumbents' demand multiplied by hysteresis.
3. keep     -- every copy that is already where it should be stays (no load).
4. place    -- missing copies go to the least-loaded replicas with a free slot,
               hottest adapter first (longest-processing-time greedy balancing).
5. balance  -- copies move from replicas whose expected load is out of the
               tolerance band to replicas with free slots (a new or recovered
               replica fills up here), each move strictly evening out the pair.
6. warm     -- adapters without a GPU copy get up to `warm_copies` copies in host
               memory, by request rate over the long memory (warm_half_life_s),
               kept where they already are, else on the least-loaded replicas
               with room.

Expected load: a GPU copy of adapter a carries w_a / copies_a of the fleet's
demand weight (the router spreads an adapter's requests over its holders), a CPU
copy all of w_a. The weight w_a is the adapter's token rate times its relative LoRA
step cost (`PlacementSnapshot.costs`, 1.0 when unknown): a rank-64 adapter on all
seven projections slows every step it is in ~3.8x as much as a rank-8 q/v one, so
it counts for that much more when copies are counted and replicas balanced
(cost-aware packing). Tiers follow vLLM: `gpu_slots` is max_loras; `cpu_slots` is max_cpu_loras,
which counts the adapters in GPU slots too, so a replica can hold `cpu_slots -
gpu_slots` adapters warm in host memory only. `ReplicaPlacement.cpu` lists those
host-only adapters, disjoint from `gpu`, as `ReplicaStats.cpu_resident` does.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from cluster.placement.demand import AdapterDemand
from cluster.placement.settings import PlacementSettings
from cluster.stats import ReplicaStats, Tier

# Loads are sums of floats accumulated in different orders by different passes; a
# comparison closer than this (relative to the mean load) counts as a tie, so two
# passes over the same input cannot disagree by one rounding error.
_EPS = 1e-9


# ---- data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaPlacement:
    """What one replica should hold: `gpu` in GPU slots, `cpu` warm in host memory
    only (disjoint from `gpu`)."""

    gpu: frozenset[str] = frozenset()
    cpu: frozenset[str] = frozenset()


EMPTY = ReplicaPlacement()


class DesiredPlacement(Mapping[str, ReplicaPlacement]):
    """replica_id -> ReplicaPlacement, for every replica the plan knows about
    (unhealthy ones map to an empty placement). Read-only; compares equal to any
    mapping with the same items."""

    def __init__(self, replicas: Mapping[str, ReplicaPlacement] | None = None) -> None:
        self._replicas = dict(replicas or {})
        self._table: dict[str, tuple[str, ...]] | None = None

    def __getitem__(self, replica_id: str) -> ReplicaPlacement:
        return self._replicas[replica_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._replicas)

    def __len__(self) -> int:
        return len(self._replicas)

    def __repr__(self) -> str:
        return f"DesiredPlacement({self._replicas!r})"

    def for_replica(self, replica_id: str) -> ReplicaPlacement:
        """The replica's desired set; empty for a replica the plan does not know."""
        return self._replicas.get(replica_id, EMPTY)

    def table(self) -> dict[str, tuple[str, ...]]:
        """adapter -> replica ids that should hold it, GPU holders first (each group
        sorted): the router's placement hint, `ClusterView(placement=...)`."""
        if self._table is None:
            gpu: dict[str, list[str]] = {}
            cpu: dict[str, list[str]] = {}
            for rid in sorted(self._replicas):
                p = self._replicas[rid]
                for a in p.gpu:
                    gpu.setdefault(a, []).append(rid)
                for a in p.cpu:
                    cpu.setdefault(a, []).append(rid)
            self._table = {
                a: tuple(gpu.get(a, ())) + tuple(cpu.get(a, ()))
                for a in sorted(set(gpu).union(cpu))
            }
        return self._table

    def gpu_copies(self) -> dict[str, int]:
        """adapter -> number of replicas that should hold it in a GPU slot."""
        counts: dict[str, int] = {}
        for p in self._replicas.values():
            for a in p.gpu:
                counts[a] = counts.get(a, 0) + 1
        return counts


@dataclass(frozen=True)
class PlacementSnapshot:
    """What the planner sees: the latest stats of every replica the controller
    counts as part of the fleet (it leaves out replicas that stopped reporting, or
    passes them with healthy=False), the demand estimate, and each adapter's
    relative LoRA step cost (`cluster.lora_cost`; missing: 1.0)."""

    replicas: tuple[ReplicaStats, ...]
    demand: Mapping[str, AdapterDemand]
    costs: Mapping[str, float]

    def __init__(
        self,
        replicas: Iterable[ReplicaStats],
        demand: Mapping[str, AdapterDemand],
        costs: Mapping[str, float] | None = None,
    ) -> None:
        object.__setattr__(self, "replicas", tuple(replicas))
        object.__setattr__(self, "demand", demand)
        object.__setattr__(self, "costs", costs or {})


@dataclass(frozen=True)
class Load:
    """Make `adapter` resident on `replica_id` at `tier` (GPU: in a slot; CPU: in
    host memory). `source` is where it comes from: CPU for a host-to-device copy,
    ABSENT for a read from the adapter store (the expensive case)."""

    adapter: str
    replica_id: str
    tier: Tier
    source: Tier = Tier.ABSENT


@dataclass(frozen=True)
class Unload:
    """Take `adapter` out of `tier` on `replica_id`. Out of GPU: it frees the slot
    and stays in host memory; out of CPU: it leaves the replica."""

    adapter: str
    replica_id: str
    tier: Tier


Action = Load | Unload


# ---- plan ------------------------------------------------------------------------------


def plan(
    snapshot: PlacementSnapshot,
    settings: PlacementSettings,
    previous: DesiredPlacement | None = None,
) -> DesiredPlacement:
    """The desired placement for `snapshot`; pure and deterministic.

    `previous` is the controller's last plan (None at start): together with each
    replica's observed residency it defines the incumbents that hysteresis protects.
    Planning the same snapshot again with its own result as `previous` returns the
    same placement, so a steady fleet sees no moves.
    """
    by_id = {s.replica_id: s for s in snapshot.replicas}
    result = {rid: EMPTY for rid in sorted(by_id)}
    # A draining replica is leaving: plan nothing on it, so its adapters re-home now.
    healthy = [by_id[rid] for rid in sorted(by_id) if by_id[rid].healthy and not by_id[rid].draining]
    if healthy:
        result.update(_Pass(healthy, snapshot.demand, settings, previous, snapshot.costs).run())
    return DesiredPlacement(result)


def _gpu_capacity(stats: ReplicaStats, reserve: int) -> int:
    """Slots the plan may fill: all but `reserve`, but never the replica's last one
    (a replica with one slot would otherwise get nothing planned at all)."""
    if stats.gpu_slots <= 0:
        return 0
    return max(1, stats.gpu_slots - reserve)


class _Pass:
    """One planning pass; mutable scratch state, discarded after `run`."""

    def __init__(
        self,
        healthy: list[ReplicaStats],
        demand: Mapping[str, AdapterDemand],
        settings: PlacementSettings,
        previous: DesiredPlacement | None,
        costs: Mapping[str, float] | None = None,
    ) -> None:
        self.settings = settings
        self.h = settings.hysteresis
        self.ids = [s.replica_id for s in healthy]
        self.gpu_cap = {s.replica_id: _gpu_capacity(s, settings.reserve_gpu_slots) for s in healthy}
        self.cpu_cap = {
            s.replica_id: max(0, s.cpu_slots - s.gpu_slots - settings.reserve_cpu_slots)
            for s in healthy
        }
        self.load = dict.fromkeys(self.ids, 0.0)
        self.gpu: dict[str, set[str]] = {rid: set() for rid in self.ids}
        self.cpu: dict[str, set[str]] = {rid: set() for rid in self.ids}

        # Incumbents, healthy replicas only, each list sorted by replica id. Which
        # adapters compete as incumbents for slots: those in the previous plan, or
        # those observed resident when there is no previous plan (controller start).
        # With a previous plan, observed residency only says where keeping or adding
        # a copy costs nothing: the router loads adapters on demand all the time, and
        # counting those as incumbents would let noise in the tail reorder the plan.
        self.has_previous = previous is not None
        self.prev_gpu: dict[str, list[str]] = {}
        self.prev_cpu: dict[str, list[str]] = {}
        if previous is not None:
            for rid in self.ids:
                p = previous.for_replica(rid)
                for a in p.gpu:
                    self.prev_gpu.setdefault(a, []).append(rid)
                for a in p.cpu:
                    self.prev_cpu.setdefault(a, []).append(rid)
        self.obs_gpu: dict[str, list[str]] = {}
        self.obs_cpu: dict[str, list[str]] = {}
        for s in healthy:
            for a in set(s.gpu_resident).union(s.loading):
                self.obs_gpu.setdefault(a, []).append(s.replica_id)
            for a in s.cpu_resident:
                self.obs_cpu.setdefault(a, []).append(s.replica_id)

        # Demand weight: token rate (what occupies a batch), or request rate when no
        # replica reports tokens, times the adapter's relative step cost.
        use_tokens = sum(d.token_rate for d in demand.values()) > 0
        costs = costs or {}
        self.weight = {
            a: (d.token_rate if use_tokens else d.req_rate) * costs.get(a, 1.0) for a, d in demand.items()
        }
        self.demand = demand
        pins = settings.pins
        self.pins = pins
        floor = settings.demand_floor
        self.eligible = sorted(
            {a for a, d in demand.items() if d.req_rate > floor or d.long_req_rate > floor}.union(pins)
        )
        for a in pins:
            self.weight.setdefault(a, 0.0)
        self.counts: dict[str, int] = {}
        self.copy_load: dict[str, float] = {}
        self.selected: list[str] = []

    def run(self) -> dict[str, ReplicaPlacement]:
        self.choose_counts()
        self.keep_incumbents()
        self.place_missing()
        self.balance()
        self.warm()
        return {
            rid: ReplicaPlacement(frozenset(self.gpu[rid]), frozenset(self.cpu[rid]))
            for rid in self.ids
        }

    # -- 1 + 2 ---------------------------------------------------------------------------

    def choose_counts(self) -> None:
        """Copies per adapter, then which adapters fit.

        Proportional replication: an adapter with share x of the token rate gets
        ceil(x * R) copies, so no copy carries more than the mean replica load and
        the router can serve every request where its adapter already is. Hysteresis
        keeps the current count while it lies within [ideal / h, ideal * h], so a
        hot adapter's count does not step up and down with every estimate.

        When the ideal counts need more slots than the fleet has, adapters are
        served in priority order (pins, then demand with incumbents' demand times
        h) and the last ones get fewer or no copies: they go to the warm tier.
        """
        r = len(self.ids)
        h = self.h
        cap = min(self.settings.max_replicas_per_adapter or r, r)
        total = sum(self.weight[a] for a in self.eligible)
        for a in self.eligible:
            raw = self.weight[a] / total * r if total > 0 else 0.0
            ideal = min(cap, max(1, math.ceil(raw - _EPS)))
            current = len(self.prev_gpu.get(a, ())) if self.has_previous else 0
            if not current:
                current = len(self.obs_gpu.get(a, ()))
            n = ideal
            if current > 0:
                lo = max(1, math.ceil(raw / h - _EPS))
                hi = max(1, math.ceil(raw * h - _EPS))
                if lo <= current <= hi:
                    n = min(current, cap)
            pin = self.pins.get(a, 0)
            self.counts[a] = max(n, min(pin, r))

        def priority(a: str) -> tuple[int, float, str]:
            incumbent = a in (self.prev_gpu if self.has_previous else self.obs_gpu)
            return (0 if a in self.pins else 1, -self._standing(a, incumbent), a)

        room = sum(self.gpu_cap.values())
        for a in sorted(self.eligible, key=priority):
            n = min(self.counts[a], room)
            if room <= 0:
                break
            if n <= 0:
                continue
            self.counts[a] = n
            room -= n
            self.selected.append(a)
            self.copy_load[a] = self.weight[a] / n
        self.mean_load = sum(self.weight[a] for a in self.selected) / r

    def _standing(self, a: str, incumbent: bool) -> float:
        """An adapter's demand as seen when it competes for a slot: an incumbent's
        times h and raised by `confidence_z` standard deviations of Poisson noise,
        a challenger's lowered by as much. So a challenger displaces an incumbent
        only when it is hotter by more than the hysteresis factor and by more than
        chance: an adapter seen twice in the estimate's window is not reliably
        hotter than one seen once, and swapping them would be churn."""
        w = self.weight[a]
        d = self.demand.get(a)
        n = d.samples() if d is not None else None
        rel = self.settings.confidence_z / math.sqrt(max(n, 1.0)) if n is not None else 0.0
        return w * self.h * (1.0 + rel) if incumbent else w * max(0.0, 1.0 - rel)

    # -- 3 -------------------------------------------------------------------------------

    def _assign_gpu(self, a: str, rid: str) -> None:
        self.gpu[rid].add(a)
        self.load[rid] += self.copy_load[a]

    def keep_incumbents(self) -> None:
        """Every selected adapter keeps up to its count of copies where it already
        is: first where the previous plan put it, then where it is observed
        resident (a copy the router loaded on demand becomes a planned one for
        free). Hottest adapters first, so when a replica has fewer slots than
        incumbents, the coldest move."""
        for a in self.selected:
            kept = 0
            for rid in _unique(self.prev_gpu.get(a, ()), self.obs_gpu.get(a, ())):
                if kept >= self.counts[a]:
                    break
                if a not in self.gpu[rid] and len(self.gpu[rid]) < self.gpu_cap[rid]:
                    self._assign_gpu(a, rid)
                    kept += 1

    # -- 4 -------------------------------------------------------------------------------

    def place_missing(self) -> None:
        """Missing copies go to the least-loaded replicas with a free slot, hottest
        adapter first: the longest-processing-time greedy, which keeps every
        replica within one copy's load of the others. A heap of (load, id) with
        stale entries skipped keeps this O(copies * log R)."""
        heap = [(self.load[rid], rid) for rid in self.ids if len(self.gpu[rid]) < self.gpu_cap[rid]]
        heapq.heapify(heap)
        high = (1 + self.settings.balance_tolerance) * self.mean_load
        for a in self.selected:
            need = self.counts[a] - sum(1 for rid in self._holders(a))
            # Where it is warm in host memory already, a copy costs a host-to-device
            # copy instead of a store read: take such replicas first if they have a
            # free slot and stay within the balance band.
            for rid in _unique(self.prev_cpu.get(a, ()), self.obs_cpu.get(a, ())):
                if need <= 0:
                    break
                if (
                    a not in self.gpu[rid]
                    and len(self.gpu[rid]) < self.gpu_cap[rid]
                    and self.load[rid] + self.copy_load[a] <= high
                ):
                    self._assign_gpu(a, rid)
                    need -= 1
                    if len(self.gpu[rid]) < self.gpu_cap[rid]:
                        heapq.heappush(heap, (self.load[rid], rid))
            skipped = []
            while need > 0 and heap:
                load, rid = heapq.heappop(heap)
                if load != self.load[rid] or len(self.gpu[rid]) >= self.gpu_cap[rid]:
                    continue  # stale entry; the current one is elsewhere in the heap
                if a in self.gpu[rid]:
                    skipped.append((load, rid))
                    continue
                self._assign_gpu(a, rid)
                need -= 1
                if len(self.gpu[rid]) < self.gpu_cap[rid]:
                    heapq.heappush(heap, (self.load[rid], rid))
            for entry in skipped:
                heapq.heappush(heap, entry)

    def _holders(self, a: str) -> Iterator[str]:
        candidates = _unique(self.prev_gpu.get(a, ()), self.obs_gpu.get(a, ()))
        return (rid for rid in candidates if a in self.gpu[rid])

    # -- 5 -------------------------------------------------------------------------------

    def balance(self) -> None:
        """Move copies from the busiest replicas to the least-loaded one with a free
        slot, while either is outside mean x (1 +- balance_tolerance).

        Each move takes the copy that best evens out the pair and must strictly
        lower the larger of the two loads, so the loop ends (the sum of squared
        loads falls every time) and a balanced fleet sees no moves at all. This is
        how a new, empty replica gets its share in one pass: it sits below the band
        with free slots, and copies flow to it from the busiest replicas.
        """
        r = len(self.ids)
        mean = sum(self.load.values()) / r
        if mean <= 0:
            return
        eps = _EPS * mean
        tol = self.settings.balance_tolerance
        high, low = (1 + tol) * mean, (1 - tol) * mean
        for _ in range(sum(self.gpu_cap.values())):
            receivers = [rid for rid in self.ids if len(self.gpu[rid]) < self.gpu_cap[rid]]
            if not receivers:
                return
            dst = min(receivers, key=lambda rid: (self.load[rid], rid))
            dst_load = self.load[dst]
            moved = False
            for src in sorted(self.ids, key=lambda rid: (-self.load[rid], rid)):
                src_load = self.load[src]
                if src_load <= dst_load + eps:
                    break
                if not (src_load > high + eps or dst_load < low - eps):
                    break
                best = self._best_move(src, dst)
                if best is not None:
                    self.gpu[src].discard(best)
                    self.load[src] -= self.copy_load[best]
                    self._assign_gpu(best, dst)
                    moved = True
                    break
            if not moved:
                return

    def _best_move(self, src: str, dst: str) -> str | None:
        """The copy on `src` whose move to `dst` leaves the lower max(src, dst),
        provided it lowers it at all."""
        src_load, dst_load = self.load[src], self.load[dst]
        eps = _EPS * max(src_load, 1e-12)
        best, best_peak = None, src_load - eps
        for a in sorted(self.gpu[src]):
            c = self.copy_load[a]
            if c <= 0 or a in self.gpu[dst]:
                continue
            peak = max(src_load - c, dst_load + c)
            if peak < best_peak:
                best, best_peak = a, peak
        return best

    # -- 6 -------------------------------------------------------------------------------

    def warm(self) -> None:
        """Adapters without a GPU copy get up to `warm_copies` copies in host memory.

        Why: a request for a warm adapter costs a host-to-device copy (ms) instead
        of a store read, and the router sends it to a warm replica. More than one
        warm copy, because a cold adapter still needs a free GPU slot on the replica
        it lands on: with two warm replicas the router can pick the one less busy.

        Same steps as the GPU tier, for the same reasons: allocate copies in
        priority order (incumbents' request rate times h, so noise in the tail's
        estimates does not move copies back and forth), first copies for everyone
        before second copies, while host slots last: no duplicate where one copy
        will do; keep every allocated copy that is already on a replica in host
        memory or a GPU slot (demoting a GPU copy costs nothing); put the rest on
        the least-loaded replicas with room, each copy carrying an equal share of
        its adapter's demand as load. Keeping before placing means a newcomer never
        takes the room an incumbent needs.
        """
        placed_gpu = {a for rid in self.ids for a in self.gpu[rid]}
        candidates = [a for a in self.eligible if a not in placed_gpu]
        room = sum(self.cpu_cap.values())
        if not candidates or room <= 0:
            return

        incumbents = {
            a: _unique(self.prev_cpu.get(a, ()), self.obs_cpu.get(a, ()), self.obs_gpu.get(a, ()))
            for a in candidates
        }

        def incumbent(a: str) -> bool:
            if self.has_previous:
                return a in self.prev_cpu or a in self.prev_gpu
            return bool(incumbents[a])

        def warm_rate(a: str) -> float:
            d = self.demand.get(a)
            rate = max(d.req_rate, d.long_req_rate) if d is not None else 0.0
            return rate * (self.h if incumbent(a) else 1.0)

        # By request rate over the long memory (when there is one): the warm tier is
        # about which adapters come back often enough to keep, not how many tokens
        # they asked for in the last half-minute.
        candidates.sort(key=lambda a: (-warm_rate(a), -self._standing(a, incumbent(a)), a))
        copies = dict.fromkeys(candidates, 0)
        limit = self.settings.warm_copies
        # First copies for everyone before anyone's second, existing or not: a
        # second copy (even one already resident) never keeps an adapter out of
        # host memory altogether, which with a slow store costs every one of its
        # requests a read. Within a round, priority order decides.
        for _ in range(limit):
            for a in candidates:
                if room <= 0:
                    break
                copies[a] += 1
                room -= 1
        copy_load = {a: self.weight[a] / n for a, n in copies.items() if n}

        def add(a: str, rid: str) -> None:
            self.cpu[rid].add(a)
            self.load[rid] += copy_load[a]

        missing = {}
        for a, n in copies.items():
            for rid in incumbents[a]:
                if n and len(self.cpu[rid]) < self.cpu_cap[rid]:
                    add(a, rid)
                    n -= 1
            missing[a] = n
        heap = [(self.load[rid], rid) for rid in self.ids if len(self.cpu[rid]) < self.cpu_cap[rid]]
        heapq.heapify(heap)
        for round_ in range(self.settings.warm_copies):
            for a in candidates:
                if missing[a] <= round_:
                    continue
                skipped = []
                target = None
                while target is None and heap:
                    load, rid = heapq.heappop(heap)
                    if load != self.load[rid] or len(self.cpu[rid]) >= self.cpu_cap[rid]:
                        continue
                    if a in self.cpu[rid]:
                        skipped.append((load, rid))
                        continue
                    target = rid
                for entry in skipped:
                    heapq.heappush(heap, entry)
                if target is None:
                    continue  # every replica with room already holds it
                add(a, target)
                if len(self.cpu[target]) < self.cpu_cap[target]:
                    heapq.heappush(heap, (self.load[target], target))


def _unique(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(rid for group in groups for rid in group))


# ---- diff ------------------------------------------------------------------------------


def diff(
    desired: Mapping[str, ReplicaPlacement],
    observed: Mapping[str, ReplicaStats],
    *,
    exact: bool = False,
) -> list[Action]:
    """The loads and unloads that take each observed replica to its desired set.

    The desired set is a floor, not the whole content: a replica keeps serving
    adapters outside it from its LRU caches (the cold tail the plan leaves to the
    router). So by default an adapter is unloaded only to make room for a desired
    one: least recently used first (the order the replica reports them in), and
    adapters wanted nowhere on the replica before ones wanted in host memory.
    `exact=True` unloads everything not desired instead.

    Adapters the replica reports as loading count as arriving, in a GPU slot if one
    is desired there, else in host memory: no second load is listed. Unhealthy
    replicas get no actions; a replica without a report gets a load for everything
    desired. Actions are listed per replica in id order: GPU loads, GPU unloads, CPU
    loads, CPU unloads, each sorted, so the result is deterministic.
    """
    actions: list[Action] = []
    for rid in sorted(set(desired).union(observed)):
        want = desired.get(rid, EMPTY)
        stats = observed.get(rid)
        if stats is None:
            actions.extend(Load(a, rid, Tier.GPU) for a in sorted(want.gpu))
            actions.extend(Load(a, rid, Tier.CPU) for a in sorted(want.cpu))
            continue
        if not stats.healthy:
            continue
        actions.extend(_diff_replica(want, stats, exact))
    return actions


def _diff_replica(want: ReplicaPlacement, stats: ReplicaStats, exact: bool) -> list[Action]:
    rid = stats.replica_id
    wanted = want.gpu | want.cpu
    gpu_now = list(dict.fromkeys(stats.gpu_resident))  # least recently used first
    gpu_set = set(gpu_now)
    host_only = [a for a in dict.fromkeys(stats.cpu_resident) if a not in gpu_set]
    loading = set(stats.loading)
    out: list[Action] = []

    # GPU slots
    gpu_loads = sorted(a for a in want.gpu if a not in gpu_set and a not in loading)
    out.extend(
        Load(a, rid, Tier.GPU, Tier.CPU if a in host_only else Tier.ABSENT) for a in gpu_loads
    )
    extras = [a for a in gpu_now if a not in want.gpu]
    if exact:
        gpu_unloads = extras
    else:
        arriving = len(gpu_loads) + len((loading & want.gpu) - gpu_set)
        excess = len(gpu_now) + arriving - stats.gpu_slots
        extras.sort(key=lambda a: a in want.cpu)  # stable: LRU order within each group
        gpu_unloads = extras[: max(0, excess)]
    out.extend(Unload(a, rid, Tier.GPU) for a in sorted(gpu_unloads))

    # Host memory (holds the GPU adapters too, vLLM's max_cpu_loras)
    in_gpu_after = (gpu_set - set(gpu_unloads)) | set(gpu_loads) | (loading & want.gpu)
    in_host = set(gpu_set) | set(host_only) | loading | set(gpu_loads)
    cpu_loads = sorted(a for a in want.cpu if a not in in_host)
    out.extend(Load(a, rid, Tier.CPU) for a in cpu_loads)
    # Candidates to leave host memory: not in a GPU slot after this, not wanted;
    # demoted GPU adapters are the most recently used of them.
    leavable = [a for a in host_only + gpu_unloads if a not in in_gpu_after and a not in wanted]
    if exact:
        cpu_unloads = leavable
    elif stats.cpu_slots > 0:
        excess = len(in_host) + len(cpu_loads) - stats.cpu_slots
        cpu_unloads = leavable[: max(0, excess)]
    else:
        cpu_unloads = []
    out.extend(Unload(a, rid, Tier.CPU) for a in sorted(cpu_unloads))
    return out
