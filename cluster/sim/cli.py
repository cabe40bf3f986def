"""`lorafleet sim`: run routing policies on one simulated workload and compare them.

    lorafleet sim --workload bench/workloads/sim-zipf-1.0.yaml \\
        [--policies pow2,multiplex,adapter_affinity+controller,oracle] \\
        [--requests N] [--out results.json]

Every policy runs on the identical trace (same seed); the table prints as each run
finishes, one row per (rate, policy), and `--out` writes all results with the
scenario, cost model and machine to JSON. `python -m cluster.sim.cli` works too.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from cluster.sim.scenario import Scenario, check_policy, config_dict, load_scenario
from cluster.sim.simulator import SimResult, simulate

COLUMNS = (
    ("policy", "{:<28}", "policy"),
    ("rate/s", "{:>7.0f}", "offered_rps"),
    ("goodput/s", "{:>9.1f}", "goodput_rps"),
    ("good tok/s", "{:>10.0f}", "goodput_tps"),
    ("SLO%", "{:>6.1%}", "slo_attainment"),
    ("TTFT p50", "{:>8.3f}", "ttft_p50_s"),
    ("TTFT p99", "{:>8.3f}", "ttft_p99_s"),
    ("loads/1k", "{:>8.1f}", "loads_per_1k"),
    ("swaps/1k", "{:>8.1f}", "gpu_loads_per_1k"),
    ("busy", "{:>5.2f}", "busy_fraction"),
    ("wall s", "{:>7.1f}", "wall_s"),
)


def header() -> str:
    widths = [len(fmt.format(0 if key != "policy" else "")) for _, fmt, key in COLUMNS]
    titles = [title for title, _, _ in COLUMNS]
    return "  ".join(t.rjust(w) if i else t.ljust(w) for i, (t, w) in enumerate(zip(titles, widths, strict=True)))


def row(result: SimResult) -> str:
    data = result.to_dict()
    return "  ".join(fmt.format(data[key]) for _, fmt, key in COLUMNS)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lorafleet sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", required=True, type=Path, help="scenario YAML (bench/workloads/sim-*.yaml)")
    parser.add_argument(
        "--policies",
        help="comma-separated policies (default: the scenario's list); a routing policy, "
        "POLICY+controller, or oracle",
    )
    parser.add_argument("--requests", type=int, help="override the request count (quick runs)")
    parser.add_argument("--replicas", type=int, help="override the fleet size")
    parser.add_argument("--seed", type=int, help="override the workload seed")
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    return parser.parse_args(list(argv))


def apply_overrides(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    workload, config = scenario.workload, scenario.config
    if args.requests is not None:
        workload = dataclasses.replace(workload, requests=args.requests)
    if args.seed is not None:
        workload = dataclasses.replace(workload, seed=args.seed)
    if args.replicas is not None:
        config = dataclasses.replace(config, replicas=args.replicas)
    policies = scenario.policies
    if args.policies:
        policies = tuple(check_policy(p.strip()) for p in args.policies.split(",") if p.strip())
    return dataclasses.replace(scenario, workload=workload, config=config, policies=policies)


def run(scenario: Scenario, out=None) -> list[SimResult]:
    """Run every (rate, policy) of the scenario, printing a row as each finishes."""
    out = out or sys.stdout
    print(f"# {scenario.name}: {scenario.config.replicas} replicas, {scenario.workload.adapters} adapters, "
          f"zipf {scenario.workload.zipf_s}, TTFT SLO {scenario.config.ttft_slo_s} s", file=out)
    print(header(), file=out, flush=True)
    results = []
    for workload in scenario.workloads():
        for policy in scenario.policies:
            result = simulate(scenario.config, workload, policy)
            results.append(result)
            print(row(result), file=out, flush=True)
    return results


def results_document(scenario: Scenario, results: list[SimResult], workload_file: Path) -> dict[str, object]:
    return {
        "benchmark": "simulator",
        "scenario": scenario.name,
        "description": scenario.description,
        "workload_file": str(workload_file),
        "date": datetime.date.today().isoformat(),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
        "cost_model_source": scenario.cost_source,
        "config": config_dict(scenario.config),
        "workload": scenario.workload.to_dict(),
        "rates": list(scenario.rates),
        "results": [r.to_dict() for r in results],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        scenario = apply_overrides(load_scenario(args.workload), args)
    except (OSError, ValueError, TypeError) as e:
        print(f"lorafleet sim: {e}", file=sys.stderr)
        return 2
    results = run(scenario)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results_document(scenario, results, args.workload), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
