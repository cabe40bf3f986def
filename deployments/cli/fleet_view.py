"""What `lorafleet top` shows, computed from the fleet's admin API: pure, no I/O.

A `Snapshot` is one read of `/fleet/replicas` (every live replica's stats),
`/fleet/placement` (the controller's desired placement) and `/v1/adapters` (the
registry). Rates need two reads: `build_view(previous, current)` turns a pair into
rows (per replica: adapters by tier, what the plan wants there, queue, running, KV
cache, tokens/s; per adapter: request rate and where it lives) and the placement
actions between them.

The admin API keeps no log of placement actions, so they are derived here: an adapter
that appears in (or leaves) a replica's GPU slots or host memory between two reads is
a load (or an eviction). Reads `interval` seconds apart miss a load and eviction that
both happen in between; the list is a view of the fleet, not an audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TIERS = ("gpu", "cpu", "loading")  # stats keys: gpu_resident, cpu_resident, loading
BASE_KEY = ""  # per_adapter_requests' key for base-model requests


@dataclass(frozen=True)
class Snapshot:
    at: float  # wall-clock seconds when read (for action times)
    replicas: list[dict]
    placement: dict
    adapters: list[dict]


@dataclass(frozen=True)
class ReplicaRow:
    replica_id: str
    node_id: str
    gpu: tuple[str, ...]  # in the engine's LoRA slots
    cpu: tuple[str, ...]  # in host memory only (not also in a slot)
    loading: tuple[str, ...]
    gpu_slots: int
    cpu_slots: int
    planned_gpu: tuple[str, ...]
    planned_cpu: tuple[str, ...]
    queued: int
    running: int
    kv_cache_usage: float
    tokens_per_s: float | None  # None: one read only, no rate yet
    requests_per_s: float | None
    healthy: bool


@dataclass(frozen=True)
class AdapterRow:
    name: str
    requests_per_s: float | None
    where: tuple[tuple[str, str], ...]  # (replica id, tier) for every replica holding it
    planned: tuple[str, ...]  # replicas the plan wants it on
    servable: bool = True


@dataclass(frozen=True)
class Action:
    at: float
    replica_id: str
    adapter: str
    change: str  # "loaded into gpu", "moved gpu -> cpu", "evicted from cpu", ...


@dataclass(frozen=True)
class FleetView:
    replicas: tuple[ReplicaRow, ...]
    adapters: tuple[AdapterRow, ...]
    actions: tuple[Action, ...]
    plans: int | None  # placement passes so far; None when placement is off
    base_requests_per_s: float | None = None
    hidden_adapters: int = 0  # cold adapters left out of `adapters` (over the row limit)
    notes: tuple[str, ...] = field(default_factory=tuple)


def tier_map(stats: dict) -> dict[str, str]:
    """adapter -> the fastest tier it is in on this replica."""
    tiers: dict[str, str] = {}
    for name in stats.get("loading", ()):
        tiers[name] = "loading"
    for name in stats.get("cpu_resident", ()):
        tiers[name] = "cpu"
    for name in stats.get("gpu_resident", ()):
        tiers[name] = "gpu"
    return tiers


def registry_served_id(entry: dict) -> str:
    """The id replicas report an adapter's latest version by (adapters.validation's
    `served_id`): `name@version` once published, the bare name for a legacy folder."""
    if entry.get("source") == "legacy" or not entry.get("latest"):
        return entry["id"]
    return f"{entry['id']}@{entry['latest']}"


def _rate(now: dict, before: dict | None, key: str, seconds: float | None) -> float | None:
    if before is None or not seconds or seconds <= 0:
        return None
    return max(now.get(key, 0) - before.get(key, 0), 0) / seconds


def _seconds(now: dict, before: dict | None) -> float | None:
    """Between two reports of one replica (its own clock, `ts`): rates follow what the
    replica measured, not when the reads happened to land."""
    if before is None:
        return None
    return float(now.get("ts", 0)) - float(before.get("ts", 0))


def diff_actions(before: list[dict], now: list[dict], at: float) -> list[Action]:
    """Residency changes per replica between two reads (replicas in both reads only:
    a replica that started or left is not an action on each of its adapters)."""
    old = {s["replica_id"]: tier_map(s) for s in before}
    actions = []
    for stats in now:
        rid = stats["replica_id"]
        if rid not in old:
            continue
        was, is_ = old[rid], tier_map(stats)
        for name in sorted(set(was) | set(is_)):
            a, b = was.get(name), is_.get(name)
            if a == b:
                continue
            if a is None:
                change = "loading" if b == "loading" else f"loaded into {b}"
            elif b is None:
                change = f"evicted from {a}"
            else:
                change = f"moved {a} -> {b}"
            actions.append(Action(at, rid, name, change))
    return actions


def build_view(previous: Snapshot | None, current: Snapshot, *, max_adapters: int = 20,
               history: tuple[Action, ...] = (), keep_actions: int = 12) -> FleetView:
    """The rows `top` draws. Adapters are listed busiest first, then resident ones, then
    the rest by name, at most `max_adapters` (a registry may hold thousands)."""
    before = {s["replica_id"]: s for s in previous.replicas} if previous else {}
    planned = current.placement.get("replicas", {}) if current.placement.get("enabled", True) else {}
    replicas = []
    adapter_rates: dict[str, float] = {}
    have_rates = previous is not None
    where: dict[str, list[tuple[str, str]]] = {}
    base_rate = 0.0
    for stats in sorted(current.replicas, key=lambda s: s["replica_id"]):
        rid = stats["replica_id"]
        old = before.get(rid)
        seconds = _seconds(stats, old)
        tiers = tier_map(stats)
        for name, tier in tiers.items():
            where.setdefault(name, []).append((rid, tier))
        per_now = stats.get("per_adapter_requests", {})
        per_old = old.get("per_adapter_requests", {}) if old else None
        request_rate = None
        if per_old is not None and seconds:
            rates = {k: _rate(per_now, per_old, k, seconds) or 0.0 for k in per_now}
            request_rate = sum(rates.values())
            for key, value in rates.items():
                if key == BASE_KEY:
                    base_rate += value
                else:
                    adapter_rates[key] = adapter_rates.get(key, 0.0) + value
        plan = planned.get(rid, {})
        replicas.append(ReplicaRow(
            replica_id=rid, node_id=stats.get("node_id", ""),
            gpu=tuple(sorted(stats.get("gpu_resident", ()))),
            cpu=tuple(sorted(n for n in stats.get("cpu_resident", ()) if n not in stats.get("gpu_resident", ()))),
            loading=tuple(sorted(stats.get("loading", ()))),
            gpu_slots=int(stats.get("gpu_slots", 0)), cpu_slots=int(stats.get("cpu_slots", 0)),
            planned_gpu=tuple(plan.get("gpu", ())), planned_cpu=tuple(plan.get("cpu", ())),
            queued=int(stats.get("queue_len", 0)), running=int(stats.get("running", 0)),
            kv_cache_usage=float(stats.get("kv_cache_usage", 0.0)),
            tokens_per_s=_rate(stats, old, "generated_tokens", seconds),
            requests_per_s=request_rate, healthy=bool(stats.get("healthy", True)),
        ))
    planned_on: dict[str, list[str]] = {}
    for rid, plan in planned.items():
        for name in (*plan.get("gpu", ()), *plan.get("cpu", ())):
            planned_on.setdefault(name, []).append(rid)
    registry = {registry_served_id(a): a for a in current.adapters}
    names = set(registry) | set(where) | set(adapter_rates)
    ordered = sorted(names, key=lambda n: (-adapter_rates.get(n, 0.0), n not in where, n))
    rows = tuple(
        AdapterRow(name=n, requests_per_s=(adapter_rates.get(n, 0.0) if have_rates else None),
                   where=tuple(sorted(where.get(n, ()))), planned=tuple(sorted(planned_on.get(n, ()))),
                   servable=bool(registry.get(n, {}).get("servable", True)))
        for n in ordered[:max_adapters]
    )
    new_actions = diff_actions(previous.replicas, current.replicas, current.at) if previous else []
    actions = (*history, *new_actions)[-keep_actions:]
    enabled = current.placement.get("enabled", True)
    return FleetView(
        replicas=tuple(replicas), adapters=rows, actions=tuple(actions),
        plans=current.placement.get("plans") if enabled else None,
        base_requests_per_s=base_rate if have_rates else None,
        hidden_adapters=max(len(ordered) - max_adapters, 0),
    )
