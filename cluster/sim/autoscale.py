"""The autoscaling benchmark: lorafleet against the baselines on one scenario, recorded.

    python -m cluster.sim.autoscale --workload bench/workloads/autoscale-a-10k-adapters.yaml \\
        [--out bench/results/autoscale-a-10k-adapters.json] [--seeds 1,2,3]

What runs, every policy on the identical trace of each seed:

    lorafleet               adapter_affinity routing + placement controller + lorafleet's
                            autoscaler (cluster.autoscaling)
    ray_serve_llm_default   multiplex routing + Ray Serve's default autoscaler on ongoing
                            requests, at its best target_ongoing_requests: the scenario's
                            `ray_targets` are swept on the first seed, and the best is the
                            one with the fewest replica-seconds among those that keep
                            >= 99% of requests within the SLO (else among those within
                            half a point of the highest attainment)
    llmd_lora_affinity      llm-d's LoRA-affinity routing with the same autoscaler and target
    adapters_free           lorafleet with every request for the base model (what the fleet
                            would cost if adapters were free)
    lorafleet_without_placement  lorafleet with the placement controller planning nothing
                            (it still estimates demand for the autoscaler): what the
                            controller's plan adds
    per_adapter_deployments one deployment per adapter (analytical, bounds.py)
    bound                   the replica lower bound and goodput upper bound (bounds.py)

The result file holds, per policy, slo_attainment, goodput_rps and
replica_seconds_per_1k_requests as median (min-max) over seeds, the per-seed runs,
the sweep, the issue's expectations checked, commit and machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cluster.sim.bounds import trace_bounds
from cluster.sim.provenance import result_header
from cluster.sim.scenario import Scenario, config_dict, load_scenario
from cluster.sim.simulator import SimResult, simulate
from cluster.sim.summary import spread
from cluster.sim.workload import generate

SLO_TARGET = 0.99
TIE_POINTS = 0.005  # attainments this close count as equal when choosing Ray's target
METRICS = (
    "slo_attainment",
    "goodput_rps",
    "replica_seconds_per_1k_requests",
    "mean_replicas",
    "peak_replicas",
    "ttft_p50_s",
    "ttft_p99_s",
    "loads_per_1k",
    "host_copies_per_adapter",
    "host_distinct_adapters",
    "drain_s",
    "throughput_rps",
    "wall_s",
)
SPECS = {
    "lorafleet": "adapter_affinity+controller+autoscale",
    "ray_serve_llm_default": "multiplex+ray_autoscale:{target}",
    "llmd_lora_affinity": "lora_affinity_llmd+ray_autoscale:{target}",
    "adapters_free": "adapter_affinity+controller+autoscale+adapters_free",
    "lorafleet_without_placement": "adapter_affinity+controller+autoscale+noplan",
}


def _run(scenario: Scenario, seed: int, policy: str, log, cache: Path | None = None) -> SimResult:
    """One run; with `cache`, a run already recorded there (same scenario, seed and
    policy) is read back instead of simulated again: for resuming a long benchmark
    on the same code."""
    path = cache / f"{scenario.name}--{seed}--{policy.replace(':', '_')}.json" if cache else None
    if path is not None and path.exists():
        result = SimResult(**json.loads(path.read_text()))
    else:
        config, (workload,) = scenario.for_seed(seed)
        result = simulate(config, workload, policy, catalog=scenario.build_catalog())
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result.to_dict()))
    print(
        f"{policy:<48} seed {seed}  SLO {result.slo_attainment:7.2%}  goodput {result.goodput_rps:7.1f}/s  "
        f"replica-s/1k {result.replica_seconds_per_1k_requests:7.1f}  replicas {result.mean_replicas:6.1f} "
        f"(peak {result.peak_replicas})  wall {result.wall_s:6.1f} s",
        file=log, flush=True,
    )
    return result


def _entry(spec: str, runs: Sequence[SimResult], keep_timeline: bool) -> dict[str, object]:
    dicts = [r.to_dict() for r in runs]
    entry: dict[str, object] = {"spec": spec, "seeds": [r.seed for r in runs]}
    for key in METRICS:
        entry[key] = spread([float(d[key]) for d in dicts])  # type: ignore[arg-type]
    if not keep_timeline:
        for d in dicts:
            d["timeline"] = None
    entry["runs"] = dicts
    return entry


def best_target(sweep: Sequence[Mapping[str, float]]) -> float:
    """The fewest replica-seconds among targets meeting the SLO target; if none
    does, the fewest among those within TIE_POINTS of the highest attainment (so
    98.06% on 146 replicas beats 98.08% on 256: a difference no seed would keep)."""
    meeting = [s for s in sweep if s["slo_attainment"] >= SLO_TARGET]
    if not meeting:
        top = max(s["slo_attainment"] for s in sweep)
        meeting = [s for s in sweep if s["slo_attainment"] >= top - TIE_POINTS]
    return min(meeting, key=lambda s: (s["replica_seconds_per_1k_requests"], s["target"]))["target"]


def recovery_s(timeline: Mapping[str, Sequence[float]], at_s: float, end_s: float, width: float) -> float | None:
    """Seconds from `at_s` to the end of the last timeline bucket (by arrival,
    before `end_s`) whose SLO attainment is below 99%: how long the fleet took to
    be back at the SLO for good. 0 if it never left it; None without a timeline."""
    if not timeline:
        return None
    worst_end = at_s
    for t, attainment, n in zip(timeline["t"], timeline["slo_attainment"], timeline["requests"]):
        if t + width <= at_s or t >= end_s or not n:
            continue
        if attainment < SLO_TARGET:
            worst_end = t + width
    return worst_end - at_s


def run_benchmark(scenario: Scenario, log=None, cache: Path | None = None) -> dict[str, object]:
    log = log or sys.stdout

    def run(seed: int, policy: str) -> SimResult:
        return _run(scenario, seed, policy, log, cache)

    seeds = scenario.seeds
    targets = scenario.ray_targets or ((scenario.config.ray_autoscaling.target_ongoing_requests,)
                                       if scenario.config.ray_autoscaling else ())
    if scenario.config.autoscaling is None or scenario.config.ray_autoscaling is None or not targets:
        raise ValueError("an autoscale scenario needs autoscaling, ray_autoscaling and ray_targets")
    header = result_header(scenario.name)  # the code as it was when the runs started
    print(f"# {scenario.name}: {scenario.description}", file=log, flush=True)
    policies: dict[str, dict[str, object]] = {}

    sweep_runs = {t: run(seeds[0], SPECS["ray_serve_llm_default"].format(target=_fmt(t))) for t in targets}
    sweep = [
        {"target": t, "slo_attainment": r.slo_attainment, "replica_seconds_per_1k_requests": r.replica_seconds_per_1k_requests,
         "mean_replicas": r.mean_replicas, "seed": r.seed}
        for t, r in sweep_runs.items()
    ]
    best = best_target(sweep)
    ray_spec = SPECS["ray_serve_llm_default"].format(target=_fmt(best))
    ray_runs = [sweep_runs[best]] + [run(s, ray_spec) for s in seeds[1:]]
    policies["ray_serve_llm_default"] = {**_entry(ray_spec, ray_runs, True), "target_ongoing_requests": best, "sweep": sweep}

    ours_runs = [run(s, SPECS["lorafleet"]) for s in seeds]
    policies["lorafleet"] = _entry(SPECS["lorafleet"], ours_runs, True)
    policies["lorafleet_without_placement"] = _entry(
        SPECS["lorafleet_without_placement"],
        [run(s, SPECS["lorafleet_without_placement"]) for s in seeds],
        False,
    )

    llmd_spec = SPECS["llmd_lora_affinity"].format(target=_fmt(best))
    policies["llmd_lora_affinity"] = {
        **_entry(llmd_spec, [run(s, llmd_spec) for s in seeds], False),
        "target_ongoing_requests": best,
    }
    policies["adapters_free"] = _entry(
        SPECS["adapters_free"], [run(s, SPECS["adapters_free"]) for s in seeds], False
    )

    analytical: dict[str, list[dict[str, object]]] = {"bound": [], "per_adapter_deployments": []}
    for s in seeds:
        _, (workload,) = scenario.for_seed(s)
        b = trace_bounds(
            generate(workload), scenario.config.cost, warmup_s=scenario.config.warmup_s,
            adapters=workload.adapters, min_replicas=scenario.config.autoscaling.min_replicas,
        )
        for name in analytical:
            analytical[name].append({**b[name], "seed": s})
    for name, runs in analytical.items():
        entry: dict[str, object] = {"method": runs[0]["method"], "seeds": list(seeds)}
        for key in ("slo_attainment", "goodput_rps", "replica_seconds_per_1k_requests", "mean_replicas"):
            entry[key] = spread([float(r[key]) for r in runs])  # type: ignore[arg-type]
        entry["runs"] = runs
        policies[name] = entry

    doc: dict[str, object] = {
        **header,
        "benchmark": "autoscale (simulator)",
        "scenario": scenario.name,
        "description": scenario.description,
        "seeds": list(seeds),
        "config": config_dict(scenario.config),
        "workload": scenario.workload.to_dict(),
        "catalog": dataclasses.asdict(scenario.catalog),
        "policies": policies,
    }
    doc["expectations"] = expectations(doc, scenario)
    return doc


def _fmt(t: float) -> str:
    return f"{t:g}"


def _median(policies: Mapping[str, Mapping[str, object]], name: str, key: str) -> float:
    return float(policies[name][key]["median"])  # type: ignore[index]


def expectations(doc: Mapping[str, object], scenario: Scenario) -> dict[str, object]:
    """The issue's expectations, measured (not asserted)."""
    p: Mapping[str, Mapping[str, object]] = doc["policies"]  # type: ignore[assignment]
    ours = _median(p, "lorafleet", "replica_seconds_per_1k_requests")
    out: dict[str, object] = {
        "lorafleet_slo_attainment": _median(p, "lorafleet", "slo_attainment"),
        "ray_default_slo_attainment": _median(p, "ray_serve_llm_default", "slo_attainment"),
        "replica_hours_ray_default_over_lorafleet": _median(p, "ray_serve_llm_default", "replica_seconds_per_1k_requests") / ours,
        "replica_hours_llmd_over_lorafleet": _median(p, "llmd_lora_affinity", "replica_seconds_per_1k_requests") / ours,
        "replica_hours_lorafleet_over_lower_bound": ours / _median(p, "bound", "replica_seconds_per_1k_requests"),
        "replica_hours_per_adapter_deployments_over_lorafleet": _median(p, "per_adapter_deployments", "replica_seconds_per_1k_requests") / ours,
        "replica_hours_without_placement_over_lorafleet": _median(p, "lorafleet_without_placement", "replica_seconds_per_1k_requests") / ours,
        "slo_attainment_without_placement": _median(p, "lorafleet_without_placement", "slo_attainment"),
    }
    burst = scenario.workload.burst
    if burst is not None:
        width = scenario.config.timeline_s
        end = burst.at_s + burst.duration_s if burst.duration_s is not None else float("inf")
        periods = scenario.config.placement.period_s
        out["flash_crowd_goal_s"] = 2 * periods + scenario.config.startup_s
        for name in ("lorafleet", "ray_serve_llm_default"):
            out[f"{name}_recovery_s"] = [
                recovery_s(r["timeline"], burst.at_s, end, width)  # type: ignore[index, arg-type]
                for r in p[name]["runs"]  # type: ignore[union-attr]
                if r.get("timeline")  # type: ignore[union-attr]
            ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.sim.autoscale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", required=True, type=Path)
    parser.add_argument("--seeds", help="comma-separated seeds (default: the scenario's)")
    parser.add_argument("--out", type=Path, help="default: bench/results/<scenario>.json next to the workload folder")
    parser.add_argument("--cache", type=Path, help="keep each run's result here and reuse it (resume on the same code)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        scenario = load_scenario(args.workload)
        if args.seeds:
            scenario = dataclasses.replace(scenario, seeds=tuple(int(s) for s in args.seeds.split(",")))
        doc = run_benchmark(scenario, cache=args.cache)
    except (OSError, ValueError, TypeError) as e:
        print(f"autoscale: {e}", file=sys.stderr)
        return 2
    out = args.out or args.workload.resolve().parent.parent / "results" / f"{scenario.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["expectations"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
