"""Median and range over seeds: how every simulator result is reported.

One run per seed says little about a policy (a trace's few hot adapters can land
well or badly), so each (rate, policy) is run on several seeds and reported as
median (min-max). Pure functions over result dicts (`SimResult.to_dict()`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence

KEYS = (
    "slo_attainment",
    "goodput_rps",
    "goodput_tps",
    "throughput_rps",
    "replica_seconds_per_1k_requests",
    "replica_seconds_lower_bound_per_1k",
    "mean_replicas",
    "peak_replicas",
    "ttft_p50_s",
    "ttft_p99_s",
    "loads_per_1k",
    "gpu_loads_per_1k",
    "drain_s",
    "busy_fraction",
    "wall_s",
)


def spread(values: Sequence[float]) -> dict[str, float]:
    """{"median", "min", "max"} of `values` (at least one)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(results: Iterable[Mapping[str, object]], keys: Sequence[str] = KEYS) -> list[dict[str, object]]:
    """Group results by (offered rate, policy), in first-seen order, and give each
    metric's spread over the group's seeds."""
    groups: dict[tuple[float, str], list[Mapping[str, object]]] = {}
    for r in results:
        groups.setdefault((float(r["offered_rps"]), str(r["policy"])), []).append(r)  # type: ignore[arg-type]
    out = []
    for (rate, policy), runs in groups.items():
        entry: dict[str, object] = {
            "offered_rps": rate,
            "policy": policy,
            "seeds": [r["seed"] for r in runs],
        }
        for key in keys:
            values = [float(r[key]) for r in runs if r.get(key) is not None]  # type: ignore[arg-type]
            if values:
                entry[key] = spread(values)
        out.append(entry)
    return out
