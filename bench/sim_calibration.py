"""The simulator against the live fleet: recalibrate, and state its error (issue #13, item 8).

    python -m bench.sim_calibration [--fit-level 110] [--seeds 1,2,3]

Reads the live runs of the three load levels (bench/results/calibration-live-{40,75,110}.json,
written by `python -m bench bench/workloads/calibration-live-<level>.yaml`), replays each
run's requests through the simulated fleet (same trace, same two phases, same span; see
cluster/sim/calibration.py) and compares throughput and TTFT with three cost models:

- `offline`: bench/results/cost-model-cpu.json as it is, the engine alone (one engine's
  decode steps measured offline);
- `cpu-split`: the same plus `host_per_token_s` derived from the CPU split of a served
  replica (bench/results/serving-overhead-cpu-split.json): what that replica spent per
  output token in all its processes, minus what the offline fit charges per token. No
  calibration run is used: at every level it is a prediction;
- `fitted`: the same plus `host_per_token_s` fitted by bisection so the simulated
  throughput at one level (`--fit-level`, default the overloaded one, where throughput is
  the fleet's capacity) equals that level's live median; the other levels are predictions.

Writes bench/results/cost-model-cpu-served.json (the fitted model, in the cost-model
format, with a `source` saying how), bench/results/sim-calibration.json (every run) and
the table between the `sim-calibration` markers in bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from bench.harness.runner import REPO, BenchPlan, result_header, update_readme
from cluster.sim.calibration import (
    LiveProtocol,
    fit_decreasing,
    median,
    relative_error,
    simulate_live_run,
)
from cluster.sim.cost import CostModel
from cluster.sim.simulator import SimConfig, SimResult

RESULTS = REPO / "bench" / "results"
WORKLOADS = REPO / "bench" / "workloads"
LEVELS = ("40", "75", "110")
OFFLINE_COST = RESULTS / "cost-model-cpu.json"
CPU_SPLIT = RESULTS / "serving-overhead-cpu-split.json"
SERVED_COST = RESULTS / "cost-model-cpu-served.json"
LIVE_POLICY = "adapter_affinity"  # the live variant: our router, placement controller on
SIM_POLICY = "adapter_affinity+controller"  # the same in the simulator
ENGINE_PROCESSES = ("vLLM worker (model)", "vLLM engine core")


# ---- pure: what the measurements say ---------------------------------------------------


def host_per_token_from_split(
    split: dict, cost: CostModel, *, cell: str = "stream-16", mean_prompt: float = 64.0, output_tokens: int = 32
) -> tuple[float, dict]:
    """Serving-path CPU per output token that the offline fit does not charge, from a CPU
    split of one served lorafleet replica (bench/serving_overhead.py).

    The split counts the CPU of every process of the server over the whole cell (its
    warm-up and drain included) against the tokens of the measured window only, so it
    is scaled by window / (warm-up + window) first. Then what the offline cost model
    already charges per token at that cell's batch (its clients, all on one replica:
    the engine's step over 2 adapters / batch, plus each request's prefill spread over
    its output tokens) is taken off. The rest (HTTP proxy, ingress, Ray's agents, the
    replica's actor, and the online engine's CPU beyond its offline steps) is what the
    served fleet pays on the same cores and the offline fit misses. -> (seconds per
    token, how it was computed)."""
    runs = [r["results"][cell] for r in split["runs"] if r["kind"] == "lorafleet" and cell in r["results"]]
    if not runs:
        raise ValueError(f"the CPU split has no lorafleet {cell} cell")
    total_ms = statistics.median(r["cpu"]["cpu_ms_per_token"] for r in runs)
    window_s = statistics.median(r["window_s"] for r in runs)
    warmup_s = float(split["warmup_s"])
    scaled_ms = total_ms * window_s / (window_s + warmup_s)
    batch = int(cell.rsplit("-", 1)[1])
    engine_cost = dataclasses.replace(cost, host_per_token_s=0.0)
    offline_ms = 1000 * (
        engine_cost.step_s(batch, min(2, cost.gpu_slots)) / batch
        + cost.prefill_per_token_s * mean_prompt / output_tokens
    )
    engine_ms = statistics.median(
        sum(r["cpu"]["by_component_ms_per_token"].get(p, 0.0) for p in ENGINE_PROCESSES) for r in runs
    )
    how = {
        "cell": cell,
        "cpu_ms_per_token_measured": total_ms,
        "window_s": window_s,
        "warmup_s": warmup_s,
        "cpu_ms_per_token_window_only": round(scaled_ms, 3),
        "of_which_vllm_processes_ms": round(engine_ms * window_s / (window_s + warmup_s), 3),
        "offline_fit_charges_ms_per_token": round(offline_ms, 3),
        "host_per_token_ms": round(scaled_ms - offline_ms, 3),
    }
    return (scaled_ms - offline_ms) / 1000, how


def live_summary(result: dict, policy: str = LIVE_POLICY) -> dict:
    """Median (min-max) over the live rounds of one plan's result file."""
    reports = [r["report"] for r in result["runs"] if r["policy"] == policy]
    if not reports:
        raise ValueError(f"{result.get('name')}: no run of {policy}")
    out: dict[str, object] = {"rounds": len(reports), "errors": sum(r["errors"] for r in reports)}
    for key in ("output_tok_per_s", "ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms", "requests", "adapter_loads_per_1k_requests"):
        values = [r[key] for r in reports if r.get(key) is not None]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def sim_summary(results: list[SimResult]) -> dict:
    """Median (min-max) over router seeds, in the live reports' units."""
    def stat(values: list[float]) -> dict:
        return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}

    return {
        "seeds": [r.seed for r in results],
        "output_tok_per_s": stat([r.output_tps for r in results]),
        "ttft_p50_ms": stat([1000 * r.ttft_p50_s for r in results]),
        "ttft_p99_ms": stat([1000 * r.ttft_p99_s for r in results]),
        "e2e_p50_ms": stat([1000 * r.e2e_p50_s for r in results]),
        "adapter_loads_per_1k_requests": stat([r.loads_per_1k for r in results]),
        "requests": stat([float(r.measured) for r in results]),
        "drain_s": stat([r.drain_s for r in results]),
        "busy_fraction": stat([r.busy_fraction for r in results]),
    }


def errors(live: dict, sim: dict) -> dict:
    """Relative error of the simulator's medians against the live medians."""
    return {
        key: round(relative_error(sim[key]["median"], live[key]["median"]), 4)
        for key in ("output_tok_per_s", "ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms")
    }


# ---- glue: files, the simulator, the README ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Level:
    """One live load level: its plan, its live result, and the fleet it ran."""

    name: str
    plan: BenchPlan
    result: dict

    @classmethod
    def load(cls, level: str) -> "Level":
        plan_file = WORKLOADS / f"calibration-live-{level}.yaml"
        result_file = RESULTS / f"calibration-live-{level}.json"
        if not result_file.exists():
            raise SystemExit(f"no live result {result_file}: run `python -m bench {plan_file.relative_to(REPO)}` first")
        plan = BenchPlan.from_file(plan_file)
        if plan.load.mode != "poisson":
            raise SystemExit(f"{plan_file}: the calibration replays Poisson runs, this plan is {plan.load.mode}")
        return cls(level, plan, json.loads(result_file.read_text()))

    def sim_config(self, cost: CostModel) -> SimConfig:
        """The live fleet in the simulator: its replica count and engine limits."""
        deployment = self.plan.fleet.get("deployment", {})
        engine = self.plan.fleet.get("engine", {})
        cost = dataclasses.replace(
            cost,
            gpu_slots=engine.get("max_loras", cost.gpu_slots),
            cpu_slots=engine.get("max_cpu_loras", cost.cpu_slots),
            max_num_seqs=engine.get("max_num_seqs", cost.max_num_seqs),
        )
        return SimConfig(replicas=int(deployment.get("num_replicas", 2)), cost=cost)

    def simulate(self, cost: CostModel, seeds: list[int]) -> list[SimResult]:
        protocol = LiveProtocol(warmup_s=self.plan.load.warmup_s, duration_s=self.plan.load.duration_s)
        return simulate_live_run(
            self.sim_config(cost), self.plan.workload, SIM_POLICY, self.plan.adapters.names(), protocol, seeds
        )


def fit_host_per_token(level: Level, cost: CostModel, seeds: list[int], target_tok_s: float) -> float:
    def simulated(host: float) -> float:
        results = level.simulate(dataclasses.replace(cost, host_per_token_s=host), seeds)
        return median(r.output_tps for r in results)

    return fit_decreasing(simulated, target_tok_s, 0.0, 0.1)


def served_cost_file(offline_file: Path, host: float, source: str) -> dict:
    """The offline cost-model file with the host term added: same format, same step
    measurements (so the engine part is fitted exactly as before), new source."""
    data = json.loads(offline_file.read_text())
    data["source"] = source
    data["host_per_token_s"] = round(host, 6)
    return data


def _pct(x: float) -> str:
    return f"{100 * x:+.0f}%"


def markdown(doc: dict) -> str:
    rows = [
        "| cost model | load | req/s nominal (in the window) | live tok/s median (min–max) | sim tok/s | error | live TTFT p50 ms (min–max) | sim TTFT p50 ms | error | live TTFT p99 ms | sim TTFT p99 ms | error |",
        "|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for model in doc["models"]:
        for level in doc["levels"]:
            cell = model["levels"][level["name"]]
            live, sim, err = level["live"], cell["sim"], cell["error"]
            fitted = " (fitted here)" if model.get("fitted_on") == level["name"] else ""
            rows.append(
                f"| `{model['name']}`{fitted} | {level['name']}% | {level['offered_rps']:g} ({level['window_rps']:.2f}) | "
                f"{live['output_tok_per_s']['median']:.1f} ({live['output_tok_per_s']['min']:.1f}–{live['output_tok_per_s']['max']:.1f}) | "
                f"{sim['output_tok_per_s']['median']:.1f} | {_pct(err['output_tok_per_s'])} | "
                f"{live['ttft_p50_ms']['median']:.0f} ({live['ttft_p50_ms']['min']:.0f}–{live['ttft_p50_ms']['max']:.0f}) | "
                f"{sim['ttft_p50_ms']['median']:.0f} | {_pct(err['ttft_p50_ms'])} | "
                f"{live['ttft_p99_ms']['median']:.0f} | {sim['ttft_p99_ms']['median']:.0f} | {_pct(err['ttft_p99_ms'])} |"
            )
    hosts = ", ".join(f"`{m['name']}` {1000 * m['host_per_token_s']:.2f} ms" for m in doc["models"])
    head = (
        f"**sim-calibration** — {doc['date']}, commit `{doc['commit']}`, {doc['machine']['nproc']} cores "
        f"({doc['machine']['cpu_model']}); live: medians over {doc['levels'][0]['live']['rounds']} rounds per load "
        f"(`bench/results/calibration-live-*.json`); sim: the same requests, median over router seeds "
        f"{', '.join(map(str, doc['seeds']))}. Host CPU per output token: {hosts}. "
        f"Command: `python -m bench.sim_calibration`."
    )
    return head + "\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sim_calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fit-level", default="110", choices=LEVELS, help="the live load level the host term is fitted on")
    parser.add_argument("--seeds", default="1,2,3", help="router seeds per simulated run")
    parser.add_argument("--readme", type=Path, default=REPO / "bench" / "README.md")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    header = result_header("sim-calibration")

    levels = {name: Level.load(name) for name in LEVELS}
    offline = CostModel.from_json(OFFLINE_COST)
    split_host, split_how = host_per_token_from_split(json.loads(CPU_SPLIT.read_text()), offline)
    fit_level = levels[args.fit_level]
    fit_target = live_summary(fit_level.result)["output_tok_per_s"]["median"]
    fitted_host = fit_host_per_token(fit_level, offline, seeds, fit_target)

    served = served_cost_file(
        OFFLINE_COST,
        fitted_host,
        f"bench/results/cost-model-cpu.json (the engine's offline decode steps, unchanged) plus host_per_token_s, "
        f"fitted by `python -m bench.sim_calibration` (bisection) so the simulated output tok/s of the "
        f"calibration-live-{args.fit_level} run (2 replicas x 1 core, Poisson at {fit_level.plan.workload.rate:g} req/s, "
        f"its requests replayed) equals that run's live median over {live_summary(fit_level.result)['rounds']} rounds, "
        f"{fit_target:.1f} tok/s ({fit_level.result['date']}, commit {fit_level.result['commit']}). It is the serving "
        f"path's CPU per output token on the engines' cores (proxy, ingress, Ray's agents, the replica actor, the "
        f"online engine beyond its offline steps). The CPU split of one served replica "
        f"(serving-overhead-cpu-split.json) gives {1000 * split_host:.2f} ms for the same term.",
    )
    SERVED_COST.write_text(json.dumps(served, indent=2) + "\n")

    models = [
        {"name": "offline", "host_per_token_s": 0.0, "how": "bench/results/cost-model-cpu.json as is"},
        {"name": "cpu-split", "host_per_token_s": split_host, "how": split_how},
        {"name": "fitted", "host_per_token_s": fitted_host, "fitted_on": args.fit_level,
         "how": f"bisection on the {args.fit_level}% level's live median throughput, {fit_target:.1f} tok/s; "
                f"written to bench/results/cost-model-cpu-served.json"},
    ]
    doc_levels = []
    for name, level in levels.items():
        doc_levels.append({
            "name": name,
            "plan_file": f"bench/workloads/calibration-live-{name}.yaml",
            "offered_rps": level.plan.workload.rate,
            "load": dataclasses.asdict(level.plan.load),
            "live_date": level.result["date"],
            "live_commit": level.result["commit"],
            "live": live_summary(level.result),
        })
        # the Poisson draw of the measured window: the same requests live and simulated
        doc_levels[-1]["window_rps"] = doc_levels[-1]["live"]["requests"]["median"] / level.plan.load.duration_s
    for model in models:
        cost = dataclasses.replace(offline, host_per_token_s=model["host_per_token_s"])
        model["levels"] = {}
        for entry in doc_levels:
            results = levels[entry["name"]].simulate(cost, seeds)
            sim = sim_summary(results)
            model["levels"][entry["name"]] = {"sim": sim, "error": errors(entry["live"], sim)}
            print(f"{model['name']:9s} {entry['name']:>3s}%  live {entry['live']['output_tok_per_s']['median']:7.1f} tok/s "
                  f"TTFT p50 {entry['live']['ttft_p50_ms']['median']:8.0f} ms | sim {sim['output_tok_per_s']['median']:7.1f} "
                  f"tok/s TTFT p50 {sim['ttft_p50_ms']['median']:8.0f} ms | err {model['levels'][entry['name']]['error']}",
                  flush=True)

    doc = {**header, "seeds": seeds, "fit_level": args.fit_level, "sim_policy": SIM_POLICY, "live_policy": LIVE_POLICY,
           "cost_model_offline": str(OFFLINE_COST.relative_to(REPO)), "cost_model_served": str(SERVED_COST.relative_to(REPO)),
           "levels": doc_levels, "models": models}
    (RESULTS / "sim-calibration.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.readme is not None:
        update_readme(args.readme, "sim-calibration", markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
