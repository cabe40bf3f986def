"""Offer twice the fleet's capacity for a bounded minute; measure shedding, memory,
the latency of admitted requests, and recovery.

    python -m bench.overload [--duration 60] [--factor 2]

Starts its own `lorafleet serve` (3 replicas, `max_ongoing_requests` 8, admission
bound `server.max_queue_wait_s` as shipped, the opt-in latency-following limit
`server.max_added_latency_s` at the same 5 s), then:
1. capacity, open loop: a closed-loop estimate (2 x the engines' slots of clients),
   then Poisson arrivals at 0.6 .. 1.3 x that estimate, 20 s each; capacity is the
   highest offered rate the fleet completed (>= 95% of it completed, nothing shed).
   Open loop because closed-loop clients slow down with the server and flatter it;
2. overload: Poisson arrivals at `--factor` x capacity for `--duration` s, sampling
   the RSS of every fleet process (Ray, Serve, vLLM) each second;
3. recovery: one normal request right after, then 10 s of closed loop at 4 clients.
Reports the admitted requests' p99 against the p99 at capacity, when the first 503
came relative to saturation (the first moment more requests were outstanding than
the engines run at once), whether every refusal was OpenAI-shaped, and hangs.
Writes bench/results/overload.json and a table in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]

from bench.harness import probe
from bench.harness.runner import BENCH_ASSETS, Server, _free_port, result_header, update_readme

NUM_REPLICAS, MAX_ONGOING, MAX_QUEUED = 3, 8, 16
MAX_ADDED_LATENCY_S = 5.0  # server.max_added_latency_s: the same 5 s as the shipped server.max_queue_wait_s
SLOTS = NUM_REPLICAS * MAX_ONGOING  # requests the engines run at once
SWEEP = (0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
ADAPTERS = ["poet", "haiku", "translator", "pirate", "support-bot", "code-review"]  # plus the base model


def fleet_config(assets: Path, port: int) -> dict:
    from factory.demo_assets import BASE_NAME

    return {
        "model": {"source": str(assets / "base"), "served_name": BASE_NAME},
        "engine": {"max_loras": 2, "max_cpu_loras": 4, "max_lora_rank": 16, "max_model_len": 512, "kv_cache_gib": 1},
        "deployment": {"num_replicas": NUM_REPLICAS, "replica_cpus": 0.5, "health_check_period_s": 2,
                       "max_ongoing_requests": MAX_ONGOING, "max_queued_requests": MAX_QUEUED},
        "adapters": {"uri": str(assets / "adapters")},
        # The latency-following limit is opt-in; this benchmark measures bounded overload, so it is on.
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": _free_port(), "max_added_latency_s": MAX_ADDED_LATENCY_S},
    }


def bodies(models: list[str], seed: int):
    rng = random.Random(seed)
    return lambda: probe.completion_body(rng.choice(models), stream=False, max_tokens=32, rng=rng)


DRAIN_LIMIT_S = 5.0  # a sweep step that leaves more than this to finish after its last arrival built a queue


def saturation_s(outcomes) -> float | None:
    """The first moment (since the run's start) more requests were outstanding than the
    engines run at once, as the client saw it."""
    events = sorted([(o.started_s, 1) for o in outcomes] + [(o.started_s + o.latency_s, -1) for o in outcomes])
    outstanding = 0
    for at, step in events:
        outstanding += step
        if outstanding > SLOTS:
            return at
    return None


async def open_loop_capacity(base_url: str, models: list[str], estimate: float) -> tuple[float, dict, list, list]:
    """The highest Poisson rate the fleet completed: >= 95% of it, nothing shed."""
    best, best_summary, best_outcomes, sweep = 0.0, {}, [], []
    async with httpx.AsyncClient(base_url=base_url, timeout=None, limits=httpx.Limits(max_connections=None)) as client:
        for i, factor in enumerate(SWEEP):
            rate = factor * estimate
            outcomes = await probe.open_loop(client, bodies(models, 10 + i), rate_per_s=rate, duration_s=20, timeout_s=120, seed=i)
            summary = probe.summarize(outcomes)
            last_arrival = max(o.started_s for o in outcomes)
            drain_s = max(o.started_s + o.latency_s for o in outcomes) - last_arrival
            ok = summary["kinds"].get("ok", 0)
            # Kept up: (almost) every request sent was answered, none shed, and no backlog
            # was left at the end (a backlog drains long after the last arrival). Judged on
            # the requests actually sent, not the nominal rate: 20 s of Poisson arrivals at
            # 3 req/s vary by +-13% in count.
            kept_up = summary["shed"] == 0 and ok >= 0.95 * len(outcomes) and drain_s <= DRAIN_LIMIT_S
            completed = ok / (last_arrival + drain_s)
            sweep.append({"offered": round(rate, 2), "sent": len(outcomes), "completed": round(completed, 2),
                          "shed": summary["shed"], "drain_s": round(drain_s, 2), "ok_p99_ms": summary["ok_p99_ms"],
                          "kept_up": kept_up})
            print(f"sweep {rate:.2f} req/s -> {completed:.2f} completed, shed {summary['shed']}, drain {drain_s:.1f} s, "
                  f"p99 {summary['ok_p99_ms']} ms, kept up: {kept_up}", flush=True)
            if kept_up:
                best, best_summary, best_outcomes = rate, summary, outcomes
            else:
                break
    if best == 0.0:  # not even the lowest rate kept up: its completed rate is the capacity
        best, best_summary, best_outcomes = sweep[0]["completed"], summary, outcomes
    return best, best_summary, best_outcomes, sweep


async def run(server: Server, args) -> dict:
    from factory.demo_assets import BASE_NAME

    models = [*ADAPTERS, BASE_NAME]
    await probe.measure_capacity(server.base_url, bodies(models, 0), concurrency=8, duration_s=10, timeout_s=60)  # warm-up
    estimate, closed_summary = await probe.measure_capacity(
        server.base_url, bodies(models, 1), concurrency=2 * SLOTS, duration_s=30, timeout_s=120)
    capacity, capacity_summary, capacity_outcomes, sweep = await open_loop_capacity(server.base_url, models, estimate)
    idle_rss = probe.rss_bytes(probe.fleet_processes(server.process.pid))
    rate = args.factor * capacity
    print(f"capacity {capacity:.1f} req/s (closed-loop estimate {estimate:.1f}); offering {rate:.1f} req/s for {args.duration:g} s", flush=True)
    outcomes, rss = await probe.overload(server.base_url, server.process.pid, bodies(models, 2), rate_per_s=rate,
                                         duration_s=args.duration, timeout_s=120)
    saturated = saturation_s(outcomes)
    first_503 = min((o.started_s + o.latency_s for o in outcomes if o.status == 503), default=None)
    status, first_after_s = probe.recovery_probe(server.base_url, BASE_NAME)
    _, after = await probe.measure_capacity(server.base_url, bodies(models, 3), concurrency=4, duration_s=10, timeout_s=60)
    summary = probe.summarize(outcomes)
    return {
        "capacity_req_per_s": round(capacity, 2),
        "capacity_closed_loop_estimate_req_per_s": round(estimate, 2),
        "capacity_closed_loop_run": closed_summary,
        "capacity_sweep": sweep,
        "capacity_run": capacity_summary,
        "offered_req_per_s": round(rate, 2),
        "saturation_s": None if saturated is None else round(saturated, 2),
        "first_503_s": None if first_503 is None else round(first_503, 2),
        "first_503_after_saturation_s": None if saturated is None or first_503 is None else round(first_503 - saturated, 2),
        "p99_ratio_to_capacity": (round(summary["ok_p99_ms"] / capacity_summary["ok_p99_ms"], 2)
                                  if summary.get("ok_p99_ms") and capacity_summary.get("ok_p99_ms") else None),
        "overload": summary,
        "overload_time_split_ms": {"admitted": probe.time_split(outcomes), "shed": probe.time_split(outcomes, "shed")},
        "capacity_time_split_ms": probe.time_split(capacity_outcomes),
        "admitted_share": round(summary["kinds"].get("ok", 0) / max(1, summary["requests"]), 3),
        "rss_idle_mib": round(idle_rss / 2**20),
        "rss_max_mib": round(max(b for _, b in rss) / 2**20),
        "rss_samples_mib": [(t, round(b / 2**20)) for t, b in rss],
        "recovery_first_request": {"status": status, "seconds": round(first_after_s, 3)},
        "recovery_closed_loop_4": after,
        "outcomes": probe.as_dicts(outcomes),
    }


def table(result: dict) -> str:
    o = result["overload"]
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(o["statuses"].items()))
    cap = result["capacity_run"]
    return "\n".join([
        "| capacity (open loop) | offered | requests | statuses | shed with Retry-After / OpenAI-shaped | admitted p50 / p99 / max | p99 at capacity (ratio) | first 503 after saturation | fleet RSS idle → max | first request after | hangs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {result['capacity_req_per_s']} req/s | {result['offered_req_per_s']} req/s | {o['requests']} | {statuses} | "
        f"{o['shed_with_retry_after']} / {o['shed'] - o['not_openai_shaped']} of {o['shed']} | {o['ok_p50_ms']} / {o['ok_p99_ms']} / {o['ok_max_ms']} ms | "
        f"{cap.get('ok_p99_ms')} ms ({result['p99_ratio_to_capacity']}x) | {result['first_503_after_saturation_s']} s | "
        f"{result['rss_idle_mib']} → {result['rss_max_mib']} MiB | {result['recovery_first_request']['status']} in "
        f"{result['recovery_first_request']['seconds']} s | {o['kinds'].get('timeout', 0)} |",
        "",
        *split_table(result),
        "",
        f"`python -m bench.overload` — {result['date']}, commit {result['commit']}, {result['params']}",
    ])


def split_table(result: dict) -> list[str]:
    """Where the time went (the ingress's Server-Timing), p50 / p99 ms: before the ingress
    (Ray's proxy and its queue), in the ingress up to the gate's answer, and after it."""
    rows = [("admitted at capacity", result.get("capacity_time_split_ms")),
            *((f"{label} at {result['offered_req_per_s']} req/s", (result.get("overload_time_split_ms") or {}).get(key))
              for label, key in (("admitted", "admitted"), ("shed", "shed")))]
    lines = ["| requests | outside the ingress (proxy, its queue) | arrival → admission answer | admission → answer |",
             "|---|---|---|---|"]
    for label, split in rows:
        if not split:
            continue
        cell = lambda phase: (f"{split[phase]['p50']} / {split[phase]['p99']}" if phase in split else "—")  # noqa: E731
        lines.append(f"| {label} ({split['requests']}) | {cell('outside')} | {cell('admission')} | {cell('engine')} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "overload.json")
    args = parser.parse_args()
    if args.duration > 60:
        parser.error("the overload phase is bounded to 60 s")

    from factory.demo_assets import build_demo_assets

    assets = build_demo_assets(BENCH_ASSETS / "demo")
    log_dir = BENCH_ASSETS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = Server(fleet_config(assets, _free_port()), log_dir / "overload.log")
    try:
        server.wait_ready()
        measured = asyncio.run(run(server, args))
    finally:
        server.stop()
    result = {
        **result_header("overload"),
        "params": (f"{NUM_REPLICAS} replicas, max_ongoing_requests {MAX_ONGOING} ({SLOTS} engine slots), "
                   f"max_queued_requests {MAX_QUEUED}, admission bound server.max_queue_wait_s as shipped, "
                   f"server.max_added_latency_s {MAX_ADDED_LATENCY_S:g}, "
                   f"32-token non-streamed completions, {args.factor:g}x the open-loop capacity for {args.duration:g} s (Poisson)"),
        **measured,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    update_readme(REPO / "bench" / "README.md", "overload", table(result))
    print(json.dumps({k: v for k, v in result.items() if k not in ("outcomes", "rss_samples_mib")}, indent=1))


if __name__ == "__main__":
    main()
