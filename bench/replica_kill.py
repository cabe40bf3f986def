"""Kill an engine replica's process in the middle of a load test; measure what clients
saw and how long the fleet took to recover.

    python -m bench.replica_kill [--kills 2] [--duration 60] [--kill-at 10] [--concurrency 8]

Starts its own `lorafleet serve` (3 replicas, demo model and adapters, 127.0.0.1),
runs `--kills` rounds of closed-loop load (half streamed, half not, 48-token outputs,
a 90 s client timeout per request); in each, the EngineReplica actor process serving
most of the client's open streams (by their `x-lorafleet-replica` heads) gets SIGKILL
`--kill-at` seconds in. Measures, per kill: outcomes by kind (ok, retried,
stream cut with an error event, error status, timeout = hang, truncated stream),
seconds from the kill to the replacement replica reporting healthy and to its first
served request, and whether the killed replica's vLLM EngineCore exited; and where the
recovery time goes: Serve noticing the death and asking for a new replica (the
controller's "Adding 1 replica" log line), the new replica's process starting (its
constructor's first line), its vLLM engine starting (until it serves), and its first
report reaching the fleet controller.
Writes bench/results/replica-kill.json and a table in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]

from bench.harness import probe
from bench.harness.runner import BENCH_ASSETS, Server, _free_port, result_header, update_readme

NUM_REPLICAS = 3
MODELS = ["poet", "haiku", "translator", "pirate", "support-bot", "code-review"]


def fleet_config(assets: Path, port: int) -> dict:
    from factory.demo_assets import BASE_NAME

    return {
        "model": {"source": str(assets / "base"), "served_name": BASE_NAME},
        "engine": {"max_loras": 2, "max_cpu_loras": 4, "max_lora_rank": 16, "max_model_len": 512, "kv_cache_gib": 1},
        "deployment": {"num_replicas": NUM_REPLICAS, "replica_cpus": 0.5, "health_check_period_s": 2},
        "adapters": {"uri": str(assets / "adapters")},
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": _free_port()},
        "placement": {"settings": {"period_s": 2}},
    }


async def _watch_recovery(base_url: str, before: set[str], killed: asyncio.Event, t0: float, timeout_s: float) -> dict:
    """From the kill on: when the controller first reports NUM_REPLICAS healthy
    replicas including a new one (seconds on the load's clock)."""
    await killed.wait()
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            try:
                replicas = (await client.get("/fleet/replicas")).json()["replicas"]
                live = {r["replica_id"] for r in replicas if r["healthy"]}
                if len(live) >= NUM_REPLICAS and live - before:
                    new = [r for r in replicas if r["replica_id"] in live - before]
                    return {"healthy_at_s": time.monotonic() - t0, "healthy_wall": time.time(),
                            "new_replicas": sorted(live - before), "dead": sorted(before - live),
                            "new_started_at": min(r.get("started_at", 0.0) for r in new),
                            "new_ready_at": min(r.get("ready_at", 0.0) for r in new)}
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    return {"healthy_at_s": None, "new_replicas": [], "dead": []}


SERVE_ADDS = re.compile(r"INFO (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) controller \d+ -- Adding \d+ replicas? to Deployment\(name='EngineReplica'")


def serve_added_after(log_path: Path, wall: float) -> float | None:
    """When (unix time) Ray Serve's controller first logged adding an engine replica after `wall`."""
    for match in SERVE_ADDS.finditer(log_path.read_text(errors="replace")):
        at = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=datetime.timezone.utc).timestamp()
        if at >= wall - 0.5:
            return at
    return None


def breakdown(kill_wall: float, recovery: dict, added_at: float | None) -> dict:
    """Where the seconds from the kill to the replacement's first report went."""
    started, ready, healthy = recovery.get("new_started_at") or None, recovery.get("new_ready_at") or None, recovery.get("healthy_wall")
    def span(a, b):
        return None if a is None or b is None else round(b - a, 2)
    return {
        "serve_noticed_and_asked_s": span(kill_wall, added_at),
        "replica_process_started_s": span(added_at or kill_wall, started),
        "engine_start_s": span(started, ready),
        "first_report_s": span(ready, healthy),
    }


async def one_kill(base_url: str, root_pid: int, *, duration_s: float, kill_at_s: float, concurrency: int, seed: int,
                   log_path: Path) -> dict:
    before = probe.live_replicas(base_url)
    killed = asyncio.Event()
    kill_wall: list[float] = []
    t0 = time.monotonic()

    def on_kill():
        kill_wall.append(time.time())
        killed.set()

    load = probe.load_with_kill(base_url, root_pid, MODELS, concurrency=concurrency, duration_s=duration_s,
                                kill_at_s=kill_at_s, timeout_s=90, seed=seed, on_kill=on_kill)
    (outcomes, kill), recovery = await asyncio.gather(load, _watch_recovery(base_url, before, killed, t0, 300))
    killed_at = kill.at_s
    # If the replacement was not healthy before the load ended, keep waiting for it.
    if recovery["healthy_at_s"] is None:
        recovery = {"healthy_at_s": None}
    new = set(recovery.get("new_replicas", []))
    served = [o.started_s + o.latency_s for o in outcomes if o.kind == probe.OK and o.replica in new]
    _, alive = psutil.wait_procs(kill.engine_cores, timeout=30)
    summary = probe.summarize(outcomes)
    after = [o for o in outcomes if o.started_s >= killed_at]
    return {
        "killed_at_s": round(killed_at, 2),
        "recovery_healthy_s": None if recovery["healthy_at_s"] is None else round(recovery["healthy_at_s"] - killed_at, 1),
        "recovery_first_served_s": round(min(served) - killed_at, 1) if served else None,
        "engine_core_orphaned": bool(alive),
        "recovery_breakdown": breakdown(kill_wall[0], recovery, serve_added_after(log_path, kill_wall[0])) if kill_wall else {},
        "engine_cores_of_victim": len(kill.engine_cores),
        "summary": summary,
        "failed_requests": sum(v for k, v in summary["kinds"].items() if k != probe.OK),
        "after_kill": probe.summarize(after),
        "outcomes": probe.as_dicts(outcomes),
    }


def wait_full(base_url: str, root_pid: int, timeout_s: float = 300) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if len(probe.live_replicas(base_url)) == NUM_REPLICAS and len(probe.engine_replica_processes(root_pid)) == NUM_REPLICAS:
            return
        time.sleep(1)
    raise RuntimeError("fleet did not get back to full strength")


def table(result: dict) -> str:
    rows = ["| kill | requests | ok (of which retried) | streams cut (error event + [DONE]) | other failures | hangs | replacement healthy after | first served by it after | EngineCore orphaned | Serve noticed + asked / process up / engine start / first report (s) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for i, k in enumerate(result["kills"], 1):
        s = k["summary"]
        other = k["failed_requests"] - s["kinds"].get(probe.STREAM_CUT, 0)
        rows.append(f"| {i} | {s['requests']} | {s['kinds'].get('ok', 0)} ({s['retried']}) | {s['kinds'].get(probe.STREAM_CUT, 0)} | "
                    f"{other} | {s['kinds'].get(probe.TIMEOUT, 0)} | {k['recovery_healthy_s']} s | {k['recovery_first_served_s']} s | "
                    f"{'yes' if k['engine_core_orphaned'] else 'no'} | "
                    + " / ".join(str(k.get("recovery_breakdown", {}).get(key)) for key in
                                 ("serve_noticed_and_asked_s", "replica_process_started_s", "engine_start_s", "first_report_s")) + " |")
    return "\n".join(rows) + f"\n\n`python -m bench.replica_kill` — {result['date']}, commit {result['commit']}, {result['params']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--kill-at", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "replica-kill.json")
    args = parser.parse_args()

    from factory.demo_assets import build_demo_assets

    assets = build_demo_assets(BENCH_ASSETS / "demo")
    log_dir = BENCH_ASSETS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = Server(fleet_config(assets, _free_port()), log_dir / "replica-kill.log")
    kills = []
    try:
        server.wait_ready()
        for i in range(args.kills):
            wait_full(server.base_url, server.process.pid)
            result = asyncio.run(one_kill(server.base_url, server.process.pid, duration_s=args.duration,
                                          kill_at_s=args.kill_at, concurrency=args.concurrency, seed=i, log_path=server.log_path))
            kills.append(result)
            print(f"kill {i + 1}: {result['summary']}, healthy after {result['recovery_healthy_s']} s, "
                  f"first served after {result['recovery_first_served_s']} s, orphan: {result['engine_core_orphaned']}", flush=True)
    finally:
        server.stop()
    result = {
        **result_header("replica-kill"),
        "params": f"{NUM_REPLICAS} replicas, {args.concurrency} closed-loop clients, {args.duration:g} s load, SIGKILL at {args.kill_at:g} s",
        "kills": kills,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    update_readme(REPO / "bench" / "README.md", "replica-kill", table(result))


if __name__ == "__main__":
    main()
