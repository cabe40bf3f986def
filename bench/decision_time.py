"""Time one routing decision at 8, 64 and 1,024 replicas, and one view rebuild.

    python -m bench.decision_time

Runs the pytest-benchmark cases in tests/unit/test_routing_bench.py (fixed rounds),
writes bench/results/routing_decision_time.json and the table in bench/README.md.
A decision is one `policy.rank(...)` call on a steady-state synthetic fleet; the
view rebuild happens once per stats period, not per request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from bench.harness.runner import result_header, update_readme

TESTS = "tests/unit/test_routing_bench.py"


def run_benchmarks() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", TESTS, f"--benchmark-json={out}"],
                       cwd=REPO, check=True)
        raw = json.loads(out.read_text())
    rows = []
    for case in raw["benchmarks"]:
        stats = case["stats"]
        rows.append({
            "case": case["name"],
            "policy": case["extra_info"]["policy"],
            "replicas": case["extra_info"]["replicas"],
            **{f"{k}_us": round(stats[k] * 1e6, 2) for k in ("mean", "median", "min", "max", "stddev")},
            "rounds": stats["rounds"],
        })
    return rows


def table(result: dict) -> str:
    lines = ["| what | replicas | median µs | mean µs | max µs |", "|---|---:|---:|---:|---:|"]
    for r in sorted(result["results"], key=lambda r: (r["policy"] != "adapter_affinity", r["policy"], r["replicas"])):
        what = "view rebuild (once per stats period)" if r["policy"] == "view_build" else f"`{r['policy']}` decision"
        lines.append(f"| {what} | {r['replicas']:,} | {r['median_us']:.1f} | {r['mean_us']:.1f} | {r['max_us']:.1f} |")
    load = result["loadavg"]
    return "\n".join(lines) + (f"\n\n`python -m bench.decision_time` — {result['date']}, commit {result['commit']}, "
                               f"load average {load} during the run")


def main() -> None:
    results = run_benchmarks()
    result = {
        **result_header("routing_decision_time"),
        "what": "wall time of one policy.rank(adapter, view, inflight, rng) call (view_build: one ClusterView(...) build)",
        "fleet": "cluster.routing.synthetic.synthetic_fleet: 1,000 adapters; per replica 4 in GPU slots, 12 in CPU cache, "
                 "1 in 8 loading one more; running 0-16; router in-flight 0-6 per replica over random adapters; "
                 "16 placement hints; requests cycle over 64 random adapters",
        "settings": "RoutingSettings() defaults",
        "loadavg": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "results": results,
    }
    out = REPO / "bench" / "results" / "routing_decision_time.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    update_readme(REPO / "bench" / "README.md", "decision-time", table(result))


if __name__ == "__main__":
    main()
