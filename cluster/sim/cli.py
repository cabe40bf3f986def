"""`lorafleet sim`: run policies on one simulated workload and compare them.

    lorafleet sim --workload bench/workloads/sim-zipf-1.0.yaml \\
        [--policies pow2,multiplex,adapter_affinity+controller,bound] \\
        [--seeds 1,2,3] [--requests N] [--out results.json]

Every policy runs on the identical trace of each seed; a row prints as each run
finishes, one per (seed, rate, policy), and `--out` writes all runs and their
median (min-max) over seeds, with the scenario, cost model, commit and machine, to
JSON. `python -m cluster.sim.cli` works too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cluster.sim.provenance import result_header
from cluster.sim.scenario import Scenario, check_policy, config_dict, load_scenario
from cluster.sim.simulator import SimResult, simulate
from cluster.sim.summary import summarize

COLUMNS = (
    ("policy", "{:<36}", "policy"),
    ("seed", "{:>4d}", "seed"),
    ("rate/s", "{:>7.0f}", "offered_rps"),
    ("goodput/s", "{:>9.1f}", "goodput_rps"),
    ("SLO%", "{:>6.1%}", "slo_attainment"),
    ("TTFT p50", "{:>8.3f}", "ttft_p50_s"),
    ("TTFT p99", "{:>8.3f}", "ttft_p99_s"),
    ("rep-s/1k", "{:>8.1f}", "replica_seconds_per_1k_requests"),
    ("bound", "{:>6.1f}", "replica_seconds_lower_bound_per_1k"),
    ("replicas", "{:>8.1f}", "mean_replicas"),
    ("loads/1k", "{:>8.1f}", "loads_per_1k"),
    ("drain s", "{:>7.1f}", "drain_s"),
    ("wall s", "{:>7.1f}", "wall_s"),
)


def header() -> str:
    widths = [len(fmt.format(0 if key not in ("policy",) else "")) for _, fmt, key in COLUMNS]
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
        help="comma-separated policies (default: the scenario's list); see cluster/sim/policies.py",
    )
    parser.add_argument("--seeds", help="comma-separated seeds (default: the scenario's)")
    parser.add_argument("--requests", type=int, help="override the request count (quick runs)")
    parser.add_argument("--replicas", type=int, help="override the fleet size")
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    return parser.parse_args(list(argv))


def apply_overrides(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    workload, config = scenario.workload, scenario.config
    if args.requests is not None:
        workload = dataclasses.replace(workload, requests=args.requests)
    if args.replicas is not None:
        config = dataclasses.replace(config, replicas=args.replicas)
    policies, seeds = scenario.policies, scenario.seeds
    if args.policies:
        policies = tuple(check_policy(p.strip()) for p in args.policies.split(",") if p.strip())
    if args.seeds:
        try:
            seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
        except ValueError:
            raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    return dataclasses.replace(scenario, workload=workload, config=config, policies=policies, seeds=seeds)


def run(scenario: Scenario, out=None) -> list[SimResult]:
    """Run every (seed, rate, policy) of the scenario, printing a row as each finishes."""
    out = out or sys.stdout
    print(f"# {scenario.name}: {scenario.config.replicas} replicas, {scenario.workload.adapters} adapters, "
          f"zipf {scenario.workload.zipf_s}, TTFT SLO {scenario.config.ttft_slo_s} s, "
          f"seeds {', '.join(map(str, scenario.seeds))}", file=out)
    print(header(), file=out, flush=True)
    catalog = scenario.build_catalog()
    results = []
    for _, config, workload, policy in scenario.runs():
        result = simulate(config, workload, policy, catalog=catalog)
        results.append(result)
        print(row(result), file=out, flush=True)
    return results


def results_document(
    scenario: Scenario, results: list[SimResult], workload_file: Path, header: dict[str, object] | None = None
) -> dict[str, object]:
    """`header`: the result header taken when the runs started (default: now)."""
    runs = [r.to_dict() for r in results]
    return {
        **(header or result_header(scenario.name)),
        "benchmark": "simulator",
        "scenario": scenario.name,
        "description": scenario.description,
        "workload_file": str(workload_file),
        "cost_model_source": scenario.cost_source,
        "config": config_dict(scenario.config),
        "workload": scenario.workload.to_dict(),
        "catalog": dataclasses.asdict(scenario.catalog),
        "rates": list(scenario.rates),
        "seeds": list(scenario.seeds),
        "summary": summarize(runs),
        "results": runs,
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
