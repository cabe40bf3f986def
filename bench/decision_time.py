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
import time
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


def glue_percentiles(n_replicas: int, decisions: int = 5000) -> dict:
    """Each of `decisions` whole glue decisions timed on its own: p50 / p99 / max in µs."""
    import itertools
    import random

    from cluster.routing.synthetic import adapter_name
    from bench.harness.router_glue import N_ADAPTERS, glue_decision, glue_router_and_replicas

    router, replicas = glue_router_and_replicas(n_replicas)
    rng = random.Random(0)
    adapters = itertools.cycle([adapter_name(rng.randrange(N_ADAPTERS)) for _ in range(64)])
    for i in range(200):  # warm-up
        glue_decision(router, replicas, next(adapters), f"w{i}")
    times = []
    for i in range(decisions):
        started = time.perf_counter()
        glue_decision(router, replicas, next(adapters), f"r{i}")
        times.append(time.perf_counter() - started)
    times.sort()
    pick = lambda q: round(times[min(len(times) - 1, int(q * len(times)))] * 1e6, 1)  # noqa: E731
    return {"replicas": n_replicas, "decisions": decisions, "p50_us": pick(0.5), "p99_us": pick(0.99), "max_us": round(times[-1] * 1e6, 1)}


def table(result: dict) -> str:
    lines = ["| what | replicas | median µs | mean µs | max µs |", "|---|---:|---:|---:|---:|"]
    for r in sorted(result["results"], key=lambda r: (r["policy"] != "adapter_affinity", r["policy"], r["replicas"])):
        what = "view rebuild (once per stats period)" if r["policy"] == "view_build" else f"`{r['policy']}` decision"
        lines.append(f"| {what} | {r['replicas']:,} | {r['median_us']:.1f} | {r['mean_us']:.1f} | {r['max_us']:.1f} |")
    lines += ["", "| the Ray glue with the policy, per request (choose + routed + completed) | replicas | p50 µs | p99 µs | max µs |",
              "|---|---:|---:|---:|---:|"]
    for g in result.get("glue", []):
        lines.append(f"| `adapter_affinity` + `deployments/serve/router.py` | {g['replicas']:,} | {g['p50_us']} | {g['p99_us']} | {g['max_us']} |")
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
        "glue": [glue_percentiles(n) for n in (8, 64, 1024)],
    }
    out = REPO / "bench" / "results" / "routing_decision_time.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    update_readme(REPO / "bench" / "README.md", "decision-time", table(result))


if __name__ == "__main__":
    main()
