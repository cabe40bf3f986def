"""Markdown tables from simulator result files (`lorafleet sim --out` and
`python -m cluster.sim.autoscale`).

    python -m cluster.sim.report bench/results/sim-*.json > table.md
    python -m cluster.sim.report bench/results/autoscale-*.json > table.md

For `lorafleet sim` results: one table per scenario (rows: rate x policy, each cell
the median over seeds with the range in brackets), then the comparisons per
scenario and rate: the controller's goodput against the goodput bound's and
multiplex's. For autoscale results: one table per scenario (rows: policies), then
the issue's expectations per scenario.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

CONTROLLER = "adapter_affinity+controller"
BOUND = "bound"


def cell(entry: Mapping[str, object], key: str, fmt: str = "{:,.1f}", pct: bool = False) -> str:
    """'median (min-max)' of a summary entry's metric; just the median when the
    range is a single value."""
    s = entry.get(key)
    if not isinstance(s, Mapping):
        return "—"
    f = (lambda v: f"{v:.1%}") if pct else fmt.format
    if s["min"] == s["max"]:
        return f(s["median"])
    return f"{f(s['median'])} ({f(s['min'])}–{f(s['max'])})"


def scenario_table(doc: Mapping[str, object]) -> list[str]:
    seeds = ", ".join(map(str, doc.get("seeds", [])))
    lines = [
        f"### {doc['scenario']}",
        "",
        f"{doc.get('description', '')} (seeds {seeds}; commit `{doc.get('commit', '?')}`)",
        "",
        "| rate/s | policy | goodput req/s | TTFT<=SLO | TTFT p50 s | TTFT p99 s | replica-s / 1k req | lower bound | store loads / 1k | drain s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in doc["summary"]:  # type: ignore[union-attr]
        lines.append(
            f"| {e['offered_rps']:.0f} | {e['policy']} | {cell(e, 'goodput_rps')} | {cell(e, 'slo_attainment', pct=True)} "
            f"| {cell(e, 'ttft_p50_s', '{:.3f}')} | {cell(e, 'ttft_p99_s', '{:.2f}')} "
            f"| {cell(e, 'replica_seconds_per_1k_requests', '{:,.0f}')} | {cell(e, 'replica_seconds_lower_bound_per_1k', '{:,.0f}')} "
            f"| {cell(e, 'loads_per_1k')} | {cell(e, 'drain_s')} |"
        )
    return lines


def _median(entry: Mapping[str, object] | None, key: str) -> float | None:
    if entry is None or not isinstance(entry.get(key), Mapping):
        return None
    return float(entry[key]["median"])  # type: ignore[index]


def expectation_rows(doc: Mapping[str, object]) -> list[str]:
    by_rate: dict[float, dict[str, Mapping[str, object]]] = {}
    for e in doc["summary"]:  # type: ignore[union-attr]
        by_rate.setdefault(e["offered_rps"], {})[e["policy"]] = e
    rows = []
    for rate, entries in sorted(by_rate.items()):
        c = entries.get(CONTROLLER)
        if c is None:
            continue

        def ratio(other: str) -> str:
            mine, theirs = _median(c, "goodput_rps"), _median(entries.get(other), "goodput_rps")
            return f"{mine / theirs:.2f}" if mine is not None and theirs else "n/a"

        rows.append(
            f"| {doc['scenario']} | {rate:.0f} | {cell(c, 'slo_attainment', pct=True)} "
            f"| {ratio(BOUND)} | {ratio('adapter_affinity')} | {ratio('multiplex')} |"
        )
    return rows


AUTOSCALE_ORDER = (
    "lorafleet",
    "lorafleet_without_placement",
    "ray_serve_llm_default",
    "llmd_lora_affinity",
    "per_adapter_deployments",
    "adapters_free",
    "bound",
)


def autoscale_table(doc: Mapping[str, object]) -> list[str]:
    p: Mapping[str, Mapping[str, object]] = doc["policies"]  # type: ignore[assignment]
    seeds = ", ".join(map(str, doc.get("seeds", [])))
    lines = [
        f"### {doc['scenario']}",
        "",
        f"{doc.get('description', '')} (seeds {seeds}; commit `{doc.get('commit', '?')}`)",
        "",
        "| policy | TTFT<=SLO | goodput req/s | replica-s / 1k req | mean replicas | TTFT p99 s | store loads / 1k | host copies / adapter |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in AUTOSCALE_ORDER:
        e = p.get(name)
        if e is None:
            continue
        label = name
        if "target_ongoing_requests" in e:
            label += f" (target {e['target_ongoing_requests']:g})"
        if str(e.get("method", "")).startswith("analytical"):
            label += " *"
        lines.append(
            f"| {label} | {cell(e, 'slo_attainment', pct=True)} | {cell(e, 'goodput_rps')} "
            f"| {cell(e, 'replica_seconds_per_1k_requests', '{:,.0f}')} | {cell(e, 'mean_replicas')} "
            f"| {cell(e, 'ttft_p99_s', '{:.2f}')} | {cell(e, 'loads_per_1k')} | {cell(e, 'host_copies_per_adapter', '{:.2f}')} |"
        )
    sweep = p.get("ray_serve_llm_default", {}).get("sweep")  # type: ignore[union-attr]
    if sweep:
        parts = [
            f"{s['target']:g}: {s['slo_attainment']:.1%}, {s['replica_seconds_per_1k_requests']:,.0f} replica-s/1k"
            for s in sweep  # type: ignore[union-attr]
        ]
        lines += ["", f"Ray Serve target_ongoing_requests sweep (seed {sweep[0]['seed']}): " + "; ".join(parts) + "."]  # type: ignore[index]
    lines += ["", "\\* analytical (cluster/sim/bounds.py), not simulated."]
    return lines


def autoscale_expectations(docs: Sequence[Mapping[str, object]]) -> list[str]:
    lines = [
        "| scenario | lorafleet SLO | Ray default SLO | Ray default / lorafleet replica-s | llm-d / lorafleet | lorafleet / lower bound | per-adapter deployments / lorafleet | without placement / lorafleet (its SLO) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for doc in docs:
        x: Mapping[str, object] = doc["expectations"]  # type: ignore[assignment]
        lines.append(
            f"| {doc['scenario']} | {x['lorafleet_slo_attainment']:.1%} | {x['ray_default_slo_attainment']:.1%} "
            f"| {x['replica_hours_ray_default_over_lorafleet']:.2f} | {x['replica_hours_llmd_over_lorafleet']:.2f} "
            f"| {x['replica_hours_lorafleet_over_lower_bound']:.2f} | {x['replica_hours_per_adapter_deployments_over_lorafleet']:.1f} "
            f"| {x['replica_hours_without_placement_over_lorafleet']:.2f} ({x['slo_attainment_without_placement']:.1%}) |"
        )
    return lines


def render(docs: Sequence[Mapping[str, object]]) -> str:
    autoscale = [d for d in docs if "policies" in d]
    docs = [d for d in docs if "policies" not in d]
    if autoscale:
        lines = autoscale_expectations(autoscale) + [""]
        for doc in autoscale:
            lines.extend(autoscale_table(doc))
            lines.append("")
        if not docs:
            return "\n".join(lines)
    else:
        lines = []
    lines += [
        "| scenario | rate/s | controller SLO attainment | controller / bound goodput | controller / routing alone | controller / multiplex |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for doc in docs:
        lines.extend(expectation_rows(doc))
    lines.append("")
    for doc in docs:
        lines.extend(scenario_table(doc))
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m cluster.sim.report RESULT.json ...", file=sys.stderr)
        return 2
    docs = [json.loads(p.read_text()) for p in paths]
    print(render(docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
