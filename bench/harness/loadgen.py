"""Drive a running lorafleet server over HTTP like a client would, and measure it.

Requests come from the same trace generator the simulator uses
(`cluster.sim.workload`), so a live run and a simulated run can replay one trace.
Every request streams (to time the first token) with `ignore_eos` so it produces
exactly its planned number of output tokens, and asks for the usage chunk so
output tokens are counted by the server, not guessed.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import httpx

from cluster.sim.workload import Request, WorkloadSpec, generate


@dataclass(frozen=True)
class LoadSpec:
    """How the trace is offered: `closed` keeps `concurrency` requests in flight
    (arrival times ignored); `poisson` sends each request at its arrival time."""

    mode: Literal["closed", "poisson"] = "closed"
    concurrency: int = 16
    duration_s: float = 60.0
    warmup_s: float = 10.0
    request_timeout_s: float = 300.0


@dataclass
class RequestResult:
    adapter: str | None
    ok: bool
    status: int
    ttft_s: float | None
    e2e_s: float
    output_tokens: int
    replica: str | None
    started_s: float


@dataclass
class LoadReport:
    requests: int
    errors: int
    duration_s: float
    output_tokens: int
    output_tok_per_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    e2e_p50_ms: float | None
    e2e_p99_ms: float | None
    adapter_loads: int | None = None
    adapter_loads_per_1k_requests: float | None = None
    replicas_used: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def prompt_text(n_tokens: int, rng: random.Random) -> str:
    """A prompt of exactly `n_tokens` tokens for the demo's byte-level tokenizer
    (one ASCII letter per token, plus BOS)."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(max(1, n_tokens - 1)))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def _send(client: httpx.AsyncClient, base_model: str, request: Request, prompt: str, t0: float) -> RequestResult:
    body = {
        "model": request.adapter or base_model,
        "prompt": prompt,
        "max_tokens": request.output_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    ttft, tokens, status, replica = None, 0, 0, None
    try:
        async with client.stream("POST", "/v1/completions", json=body) as response:
            status = response.status_code
            replica = response.headers.get("x-lorafleet-replica")
            if status != 200:
                await response.aread()
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        status = 500
                        break
                    if chunk.get("choices") and ttft is None:
                        ttft = time.perf_counter() - started
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError:
        status = 599
    ok = status == 200 and tokens > 0
    return RequestResult(request.adapter, ok, status, ttft, time.perf_counter() - started, tokens, replica, started - t0)


async def run_load(base_url: str, base_model: str, trace: Iterator[Request], load: LoadSpec, duration_s: float,
                   text_rng: random.Random) -> list[RequestResult]:
    """Offer requests from `trace` for `duration_s`; return every request's result.
    The trace iterator is shared, so a measured phase continues where warmup stopped."""
    limits = httpx.Limits(max_connections=max(load.concurrency, 64) * 2)
    results: list[RequestResult] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=load.request_timeout_s, limits=limits) as client:
        t0 = time.perf_counter()

        async def one(request: Request) -> None:
            results.append(await _send(client, base_model, request, prompt_text(request.prompt_tokens, text_rng), t0))

        if load.mode == "closed":
            async def worker() -> None:
                for request in trace:
                    if time.perf_counter() - t0 >= duration_s:
                        return
                    await one(request)

            await asyncio.gather(*[worker() for _ in range(load.concurrency)])
        else:
            tasks, first_arrival = [], None
            for request in trace:
                first_arrival = request.arrival_s if first_arrival is None else first_arrival
                offset = request.arrival_s - first_arrival
                if offset >= duration_s:
                    break
                delay = offset - (time.perf_counter() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(request)))
            await asyncio.gather(*tasks)
    return results


async def measure(base_url: str, base_model: str, workload: WorkloadSpec, load: LoadSpec, names: list[str]) -> LoadReport:
    """Warm up, then measure one window: throughput, latency percentiles, errors and
    adapter loads per 1,000 requests (from the replicas' own load counters)."""
    trace = generate(workload, names=names)
    text_rng = random.Random(workload.seed)
    if load.warmup_s > 0:
        await run_load(base_url, base_model, trace, load, load.warmup_s, text_rng)
    await asyncio.sleep(2.5)  # let replicas report their post-warmup counters
    loads_before = await asyncio.to_thread(fleet_adapter_loads, base_url)
    results = await run_load(base_url, base_model, trace, load, load.duration_s, text_rng)
    await asyncio.sleep(2.5)
    loads = await asyncio.to_thread(fleet_adapter_loads, base_url) - loads_before
    report = summarize(results)
    report.adapter_loads = loads
    report.adapter_loads_per_1k_requests = round(1000 * loads / report.requests, 1) if report.requests else None
    return report


def summarize(results: list[RequestResult]) -> LoadReport:
    """Throughput over the phase's span (first start to last finish) and latency percentiles."""
    ok = [r for r in results if r.ok]
    span = max((r.started_s + r.e2e_s for r in results), default=0.0) - min((r.started_s for r in results), default=0.0)
    tokens = sum(r.output_tokens for r in ok)
    ttfts = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    e2es = [r.e2e_s * 1000 for r in ok]
    used: dict[str, int] = {}
    for r in ok:
        if r.replica:
            used[r.replica] = used.get(r.replica, 0) + 1
    return LoadReport(
        requests=len(results),
        errors=len(results) - len(ok),
        duration_s=round(span, 3),
        output_tokens=tokens,
        output_tok_per_s=round(tokens / span, 2) if span > 0 else 0.0,
        ttft_p50_ms=_round(_percentile(ttfts, 50)),
        ttft_p99_ms=_round(_percentile(ttfts, 99)),
        e2e_p50_ms=_round(_percentile(e2es, 50)),
        e2e_p99_ms=_round(_percentile(e2es, 99)),
        replicas_used=used,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def fleet_adapter_loads(base_url: str) -> int:
    """Adapter loads from the store, summed over the live replicas' own counters."""
    replicas = httpx.get(f"{base_url}/fleet/replicas", timeout=30).json()["replicas"]
    return sum(r["adapter_loads"] for r in replicas)
