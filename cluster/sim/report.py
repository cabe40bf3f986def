"""Markdown tables from simulator result files (`lorafleet sim --out`).

    python -m cluster.sim.report bench/results/sim-*.json > table.md

One table per scenario (rows: rate x policy), then the issue's expectations checked
per scenario and rate: the controller's goodput against the oracle's and
multiplex's, and its adapter loads against multiplex's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

CONTROLLER = "adapter_affinity+controller"


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def scenario_table(doc: dict) -> list[str]:
    lines = [
        f"### {doc['scenario']}",
        "",
        doc.get("description", ""),
        "",
        "| rate/s | policy | goodput req/s | goodput tok/s | TTFT<=SLO | TTFT p50 s | TTFT p99 s | store loads/1k req | of which planned | GPU swaps/1k req | wall s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        planned = r["planned_store_loads"] * 1000 / r["measured"] if r["measured"] else 0.0
        lines.append(
            f"| {r['offered_rps']:.0f} | {r['policy']} | {_fmt(r['goodput_rps'])} | {_fmt(r['goodput_tps'], 0)} "
            f"| {r['slo_attainment']:.1%} | {r['ttft_p50_s']:.3f} | {r['ttft_p99_s']:.2f} "
            f"| {_fmt(r['loads_per_1k'])} | {_fmt(planned)} | {_fmt(r['gpu_loads_per_1k'])} | {_fmt(r['wall_s'])} |"
        )
    return lines


def expectation_rows(doc: dict) -> list[str]:
    by_rate: dict[float, dict[str, dict]] = {}
    for r in doc["results"]:
        by_rate.setdefault(r["offered_rps"], {})[r["policy"]] = r
    rows = []
    for rate, results in sorted(by_rate.items()):
        c, o, m = results.get(CONTROLLER), results.get("oracle"), results.get("multiplex")
        if c is None:
            continue
        vs_oracle = f"{c['goodput_rps'] / o['goodput_rps']:.2f}" if o and o["goodput_rps"] else "n/a"
        vs_multiplex = f"{c['goodput_rps'] / m['goodput_rps']:.2f}" if m and m["goodput_rps"] else "n/a"
        if m is None:
            loads = "n/a"
        elif m["loads_per_1k"]:
            loads = f"{c['loads_per_1k'] / m['loads_per_1k']:.1f}"
        else:
            loads = f"n/a (multiplex {m['loads_per_1k']:.1f})"
        rows.append(f"| {doc['scenario']} | {rate:.0f} | {vs_oracle} | {vs_multiplex} | {loads} |")
    return rows


def render(docs: Sequence[dict]) -> str:
    lines = [
        "| scenario | rate/s | controller / oracle goodput (want >= 0.9) | controller / multiplex goodput (want >= 1.5) | controller / multiplex loads (want <= 0.33) |",
        "|---|---:|---:|---:|---:|",
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
