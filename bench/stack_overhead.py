"""Stack overhead: one replica through lorafleet's HTTP API vs vLLM's offline engine,
same requests, same concurrency (all at once), same engine settings.

    python -m bench.stack_overhead [--requests 256] [--rounds 3]

Writes bench/results/stack-overhead.json and a table in bench/README.md. The goal
(router issue): the served path keeps >= 70% of the offline engine's output tok/s.
Runs alternate (offline, served, offline, served, ...) because this machine is noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]

from bench.harness.runner import AdapterSet, Server, _free_port, build_assets, fleet_config, result_header, update_readme
from bench.harness.loadgen import prompt_text

OUTPUT_TOKENS = 32


def make_requests(n: int, adapters: list[str], seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(adapters[i % len(adapters)], prompt_text(rng.randint(32, 96), rng)) for i in range(n)]


def offline_tok_per_s(config: dict, requests: list[tuple[str, str]]) -> float:
    """vLLM's offline LLM with the same engine flags lorafleet's replica uses."""
    from vllm import LLM, SamplingParams
    from vllm.engine.arg_utils import EngineArgs
    from vllm.lora.request import LoRARequest

    import os

    from deployments.config import parse_config
    from deployments.engine.vllm_engine import engine_environment, parse_vllm_args

    parsed = parse_config(config)
    os.environ.update(engine_environment(parsed))  # what a replica gets through its runtime_env
    args = parse_vllm_args(parsed)
    engine_args = {k: v for k, v in vars(EngineArgs.from_cli_args(args)).items()}
    llm = LLM(**engine_args)
    ids = {name: i + 1 for i, name in enumerate(sorted({a for a, _ in requests}))}
    loras = [LoRARequest(a, ids[a], f"{parsed.adapters.uri}/{a}") for a, _ in requests]
    params = SamplingParams(max_tokens=OUTPUT_TOKENS, ignore_eos=True, temperature=0)
    llm.generate([p for _, p in requests[:4]], params, lora_request=loras[:4], use_tqdm=False)  # warm the slots
    started = time.perf_counter()
    outputs = llm.generate([p for _, p in requests], params, lora_request=loras, use_tqdm=False)
    elapsed = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    del llm
    return tokens / elapsed


async def served_tok_per_s(base_url: str, requests: list[tuple[str, str]]) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=httpx.Limits(max_connections=len(requests) + 8)) as client:
        async def one(adapter: str, prompt: str) -> int:
            body = {"model": adapter, "prompt": prompt, "max_tokens": OUTPUT_TOKENS, "ignore_eos": True, "temperature": 0}
            response = await client.post("/v1/completions", json=body)
            response.raise_for_status()
            return response.json()["usage"]["completion_tokens"]

        await asyncio.gather(*[one(a, p) for a, p in requests[:4]])  # warm the slots
        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*[one(a, p) for a, p in requests]))
        return tokens / (time.perf_counter() - started)


def run_offline_in_subprocess(config: dict, n: int) -> float:
    """Each offline run in its own process (this script again, `--offline-config`): the
    engine frees all memory and threads, and vLLM's spawned engine process finds a
    proper `__main__` module."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    out = subprocess.run([sys.executable, "-m", "bench.stack_overhead", "--offline-config", f.name, "--requests", str(n)],
                         capture_output=True, text=True, cwd=REPO)
    Path(f.name).unlink(missing_ok=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    if not lines:
        raise RuntimeError(out.stderr[-6000:])
    return float(lines[-1].split()[1])


ADAPTERS = ["bench-0000", "bench-0001"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--offline-config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.offline_config:
        config = json.loads(Path(args.offline_config).read_text())
        print("RESULT", offline_tok_per_s(config, make_requests(args.requests, ADAPTERS)), flush=True)
        return

    adapter_set = AdapterSet(count=48, rank=8, target_modules=("q_proj", "v_proj"))
    base, adapter_dir = build_assets(adapter_set)
    plan = type("Plan", (), {"fleet": {"deployment": {"num_replicas": 1, "replica_cpus": 1.0, "max_ongoing_requests": args.requests},
                                       "engine": {"max_loras": 2, "max_cpu_loras": 4, "max_num_seqs": 256}}})()
    requests = make_requests(args.requests, ADAPTERS)
    offline, served = [], []
    for round_no in range(args.rounds):
        config = fleet_config(plan, "pow2", base, adapter_dir, _free_port())
        offline.append(run_offline_in_subprocess(config, args.requests))
        server = Server(config, REPO / ".bench-assets" / "logs" / f"stack-overhead-{round_no}.log")
        try:
            server.wait_ready()
            served.append(asyncio.run(served_tok_per_s(server.base_url, requests)))
        finally:
            server.stop()
        print(f"round {round_no}: offline {offline[-1]:.0f} tok/s, served {served[-1]:.0f} tok/s", flush=True)
    ratio = statistics.median(served) / statistics.median(offline)
    result = {
        **result_header("stack-overhead"),
        "requests": args.requests, "output_tokens": OUTPUT_TOKENS, "adapters": ADAPTERS, "concurrency": args.requests,
        "offline_tok_per_s": offline, "served_tok_per_s": served, "served_over_offline_median": round(ratio, 3),
    }
    (REPO / "bench" / "results" / "stack-overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    table = (
        f"**stack-overhead** — {result['date']}, commit `{result['commit']}`, {result['machine']['nproc']} cores; "
        f"{args.requests} requests at once, 2 adapters, {OUTPUT_TOKENS} output tokens, 1 replica, {args.rounds} alternating rounds.\n\n"
        "| path | output tok/s median (min–max) |\n|---|---|\n"
        f"| vLLM offline `LLM.generate` | {statistics.median(offline):.0f} ({min(offline):.0f}–{max(offline):.0f}) |\n"
        f"| lorafleet HTTP API, 1 replica | {statistics.median(served):.0f} ({min(served):.0f}–{max(served):.0f}) |\n"
        f"| served / offline | {ratio:.0%} |"
    )
    update_readme(REPO / "bench" / "README.md", "stack-overhead", table)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
