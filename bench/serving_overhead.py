"""The price of the fleet: one lorafleet replica against vLLM's own OpenAI server.

    python -m bench.serving_overhead [--rounds 3] [--concurrency 1,16,64] [--seconds 20]

What a user would otherwise run is vLLM's OpenAI server (`vllm.entrypoints.openai.api_server`),
so that is the yardstick: the same model, the same 8 adapters (Zipf 1.0 popularity), the
same engine flags and environment (lorafleet's `vllm_cli_args` / `engine_environment`,
the vLLM plugin included, so both engines run identical kernels), the same machine. Each
round starts each server fresh (alternating which goes first) and drives it with
closed-loop clients at each concurrency, streaming and non-streaming, `ignore_eos` so
every request produces exactly `max_tokens`, output tokens counted from the servers'
own `usage`. lorafleet runs 1 engine replica with its default router and the placement
controller on, as shipped; its extra processes (Ray's HTTP proxy, the ingress, the
controller, Ray's daemons) share the machine's cores with the engine: that is what a
user pays for.

Writes bench/results/serving-overhead.json and a table in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.harness.loadgen import prompt_text
from bench.harness.runner import AdapterSet, Server, _free_port, build_assets, fleet_config, result_header, update_readme

REPO = Path(__file__).resolve().parents[1]
ADAPTERS = AdapterSet(count=8, rank=8, target_modules=("q_proj", "v_proj"), seed=300)
OUTPUT_TOKENS = 32
ENGINE = {"max_loras": 2, "max_cpu_loras": 8, "max_num_seqs": 64, "max_model_len": 512}


def _zipf_weights(n: int, s: float = 1.0) -> list[float]:
    raw = [1 / (i + 1) ** s for i in range(n)]
    return [w / sum(raw) for w in raw]


class VLLMServer:
    """vLLM's OpenAI server with lorafleet's engine flags and environment."""

    def __init__(self, config: dict, adapters: list[str], adapter_dir: Path, log_path: Path):
        from deployments.config import parse_config
        from deployments.engine.vllm_engine import engine_environment, vllm_cli_args

        parsed = parse_config(config)
        port = config["server"]["port"]
        self.base_url = f"http://127.0.0.1:{port}"
        model, *flags = vllm_cli_args(parsed)  # `vllm serve MODEL`; the api_server module takes --model
        args = ["--model", model, *flags, "--host", "127.0.0.1", "--port", str(port),
                                        "--lora-modules", *[f"{a}={adapter_dir / a}" for a in adapters]]
        env = {**os.environ, **engine_environment(parsed)}
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)

    def wait_ready(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.base_url}/v1/models", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"vLLM's server failed to start; see {self.log_path}")
            time.sleep(2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


async def drive(base_url: str, adapters: list[str], *, concurrency: int, stream: bool, seconds: float,
                warmup_s: float, seed: int) -> dict:
    """Closed loop: `concurrency` clients, each sending its next request when the last
    one ends; counts what completes inside the measured window (after warm-up) and
    the time until the last of those ends (the drain is counted)."""
    rng = random.Random(seed)
    weights = _zipf_weights(len(adapters))
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    ttfts, latencies, tokens = [], [], 0
    errors = 0
    t0 = time.perf_counter()
    measure_from, stop_at = t0 + warmup_s, t0 + warmup_s + seconds
    last_end = measure_from

    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        async def one() -> None:
            nonlocal tokens, errors, last_end
            adapter = rng.choices(adapters, weights)[0]
            body = {"model": adapter, "prompt": prompt_text(rng.randint(32, 96), rng), "max_tokens": OUTPUT_TOKENS,
                    "ignore_eos": True, "temperature": 0, "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            started = time.perf_counter()
            first, produced = None, 0
            try:
                if stream:
                    async with client.stream("POST", "/v1/completions", json=body) as response:
                        if response.status_code != 200:
                            raise httpx.HTTPStatusError("status", request=response.request, response=response)
                        async for line in response.aiter_lines():
                            if not line.startswith("data: {"):
                                continue
                            data = json.loads(line[6:])
                            if first is None and data.get("choices"):
                                first = time.perf_counter()
                            if data.get("usage"):
                                produced = data["usage"]["completion_tokens"]
                else:
                    response = await client.post("/v1/completions", json=body)
                    response.raise_for_status()
                    produced = response.json()["usage"]["completion_tokens"]
            except (httpx.HTTPError, ValueError, KeyError):
                errors += 1
                return
            ended = time.perf_counter()
            if started >= measure_from and started < stop_at:
                tokens += produced
                latencies.append(ended - started)
                if first is not None:
                    ttfts.append(first - started)
                last_end = max(last_end, ended)

        async def client_loop() -> None:
            while time.perf_counter() < stop_at:
                await one()

        await asyncio.gather(*[client_loop() for _ in range(concurrency)])
    window = max(last_end - measure_from, 1e-9)
    return {
        "requests": len(latencies), "errors": errors, "output_tokens": tokens, "window_s": round(window, 2),
        "output_tok_per_s": round(tokens / window, 1),
        "ttft_p50_ms": _ms(statistics.median(ttfts)) if ttfts else None,
        "ttft_p99_ms": _ms(_p99(ttfts)) if ttfts else None,
        "e2e_p50_ms": _ms(statistics.median(latencies)) if latencies else None,
    }


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# Which part of the serving path a process is, by its title (Ray and vLLM name their processes).
COMPONENTS = (("VLLM::EngineCore", "vLLM engine core"), ("VLLM::Worker", "vLLM worker (model)"),
              ("ServeReplica:lorafleet:EngineReplica", "lorafleet engine replica (Ray actor)"),
              ("ServeReplica:lorafleet:Ingress", "lorafleet ingress (Ray actor)"),
              ("ProxyActor", "Ray Serve HTTP proxy"), ("ServeController", "Ray Serve controller"),
              ("FleetController", "lorafleet fleet controller"),
              ("raylet", "Ray raylet"), ("gcs_server", "Ray GCS"), ("DashboardAgent", "Ray dashboard/metrics agent"),
              ("vllm.entrypoints", "vLLM OpenAI server (API process)"), ("deployments.cli", "lorafleet serve (driver)"))


def _component(process) -> str:
    try:
        title = " ".join(process.cmdline()) or process.name()
    except Exception:  # noqa: BLE001 - gone, or not ours to read
        return "other"
    for marker, name in COMPONENTS:
        if marker in title:
            return name
    return "other"


def cpu_seconds(root_pid: int) -> dict[str, float]:
    """User+system CPU seconds so far of every process in the server's tree, by component."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    out: dict[str, float] = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        name = _component(process)
        out[name] = out.get(name, 0.0) + times.user + times.system
    return out


def cpu_split(before: dict[str, float], after: dict[str, float], tokens: int) -> dict:
    """CPU ms per output token, by component, between two `cpu_seconds` samples (a
    process that started in between counts from zero)."""
    per = {name: after[name] - before.get(name, 0.0) for name in after}
    total = sum(v for v in per.values() if v > 0)
    return {"cpu_s": round(total, 2), "cpu_ms_per_token": round(1000 * total / max(tokens, 1), 2),
            "by_component_ms_per_token": {name: round(1000 * v / max(tokens, 1), 3)
                                          for name, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0.005}}


def run_server(kind: str, config: dict, adapters: list[str], adapter_dir: Path, cells: list[tuple[int, bool]],
               args, round_no: int) -> dict:
    log = REPO / ".bench-assets" / "logs" / f"serving-overhead-{kind}-{round_no}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server = VLLMServer(config, adapters, adapter_dir, log) if kind == "vllm" else Server(config, log)
    try:
        server.wait_ready()
        asyncio.run(drive(server.base_url, adapters, concurrency=4, stream=True, seconds=3, warmup_s=0, seed=1))
        results = {}
        for concurrency, stream in cells:
            cell = f"{'stream' if stream else 'json'}-{concurrency}"
            before = cpu_seconds(server.process.pid)
            results[cell] = asyncio.run(drive(server.base_url, adapters, concurrency=concurrency, stream=stream,
                                              seconds=args.seconds, warmup_s=args.warmup, seed=round_no * 100 + concurrency))
            # CPU of the whole cell (warm-up and drain included) over the tokens of its
            # measured window: an upper estimate per token, the same for both servers.
            results[cell]["cpu"] = cpu_split(before, cpu_seconds(server.process.pid), results[cell]["output_tokens"])
            print(f"round {round_no} {kind:9s} {cell:10s} {results[cell]}", flush=True)
        return results
    finally:
        server.stop()


def summarize(runs: list[dict]) -> dict:
    summary: dict = {}
    cells = sorted({cell for run in runs for cell in run["results"]})
    for cell in cells:
        entry = {}
        for kind in ("vllm", "lorafleet"):
            reports = [r["results"][cell] for r in runs if r["kind"] == kind and cell in r["results"]]
            entry[kind] = {key: _spread([r[key] for r in reports if r.get(key) is not None])
                           for key in ("output_tok_per_s", "ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms", "errors")}
        ours, theirs = entry["lorafleet"]["output_tok_per_s"], entry["vllm"]["output_tok_per_s"]
        if ours and theirs:
            entry["throughput_ratio"] = round(ours["median"] / theirs["median"], 3)
        if entry["lorafleet"]["ttft_p50_ms"] and entry["vllm"]["ttft_p50_ms"]:
            entry["ttft_p50_extra_ms"] = round(entry["lorafleet"]["ttft_p50_ms"]["median"] - entry["vllm"]["ttft_p50_ms"]["median"], 1)
        summary[cell] = entry
    return summary


def _spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": round(statistics.median(values), 1), "min": min(values), "max": max(values)}


def table(result: dict) -> str:
    rows = ["| mode, clients | vLLM server tok/s median (min–max) | lorafleet tok/s median (min–max) | lorafleet / vLLM | TTFT p50 ms vLLM → lorafleet | TTFT p99 ms vLLM → lorafleet |",
            "|---|---|---|---|---|---|"]

    def fmt(s):
        return f"{s['median']} ({s['min']}–{s['max']})" if s else "—"

    def pair(entry, key):
        a, b = entry["vllm"][key], entry["lorafleet"][key]
        return f"{a['median']} → {b['median']}" if a and b else "—"

    for cell, entry in result["summary"].items():
        ratio = entry.get("throughput_ratio")
        rows.append(f"| {cell} | {fmt(entry['vllm']['output_tok_per_s'])} | {fmt(entry['lorafleet']['output_tok_per_s'])} | "
                    f"{f'{ratio:.0%}' if ratio else '—'} | {pair(entry, 'ttft_p50_ms')} | {pair(entry, 'ttft_p99_ms')} |")
    m = result["machine"]
    head = (f"**serving-overhead** — {result['date']}, commit `{result['commit']}`, {m['nproc']} cores ({m['cpu_model']}); "
            f"{result['rounds']} alternating rounds, {result['seconds']} s measured per cell after {result['warmup_s']} s warm-up; "
            f"8 adapters (Zipf 1.0), {OUTPUT_TOKENS} output tokens, engine {json.dumps(ENGINE)}.")
    return head + "\n\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--modes", default="stream,json")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--servers", default="vllm,lorafleet")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving-overhead.json")
    parser.add_argument("--fleet", default="{}", help="JSON overrides of the lorafleet config (experiments)")
    args = parser.parse_args()
    base, adapter_dir = build_assets(ADAPTERS)
    adapters = ADAPTERS.names()
    cells = [(int(c), mode == "stream") for mode in args.modes.split(",") for c in args.concurrency.split(",")]
    plan = type("Plan", (), {"fleet": {"deployment": {"num_replicas": 1, "replica_cpus": 1.0},
                                       "engine": ENGINE, **json.loads(args.fleet)}})()
    kinds = args.servers.split(",")
    runs = []
    for round_no in range(args.rounds):
        order = kinds if round_no % 2 == 0 else kinds[::-1]
        for kind in order:
            config = fleet_config(plan, "adapter_affinity", base, adapter_dir, _free_port())
            runs.append({"round": round_no, "kind": kind, "results": run_server(kind, config, adapters, adapter_dir, cells, args, round_no)})
    result = {**result_header("serving-overhead"), "rounds": args.rounds, "seconds": args.seconds, "warmup_s": args.warmup,
              "engine": ENGINE, "fleet_overrides": json.loads(args.fleet), "runs": runs, "summary": summarize(runs)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.out.name == "serving-overhead.json":
        update_readme(REPO / "bench" / "README.md", "serving-overhead", table(result))
    print(table(result))


if __name__ == "__main__":
    main()
