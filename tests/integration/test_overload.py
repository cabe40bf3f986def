"""Overload: offered twice what a small fleet can serve, for 15 s, the server sheds
the excess at once with 503 + Retry-After (OpenAI-shaped) instead of queueing without
bound, no request hangs or gets another 5xx, and a normal request succeeds right after.

Runs its own one-replica fleet with tight limits (max_ongoing_requests 4,
max_queued_requests 4: the ingress admits 8 at once), so overload is reached in
seconds without disturbing the shared session fleet. The full measurement (2x for
60 s, memory, p99) is bench/overload.py.
"""

import asyncio
import random

import pytest

from bench.harness import probe
from bench.harness.runner import Server, _free_port

ADAPTERS = ["poet", "haiku", "translator"]


@pytest.fixture(scope="module")
def small_fleet(demo_assets, tmp_path_factory):
    from factory.demo_assets import BASE_NAME

    work = tmp_path_factory.mktemp("overload")
    config = {
        "model": {"source": str(demo_assets / "base"), "served_name": BASE_NAME},
        "engine": {"max_loras": 2, "max_cpu_loras": 4, "max_lora_rank": 16, "max_model_len": 512, "kv_cache_gib": 1},
        "deployment": {"num_replicas": 1, "replica_cpus": 0.5, "max_ongoing_requests": 4, "max_queued_requests": 4},
        "adapters": {"uri": str(demo_assets / "adapters"), "cache_dir": str(work / "adapter-cache")},
        # the shared demo store is read-only for tests: usage goes to this fleet's own ledger
        "server": {"host": "127.0.0.1", "port": _free_port(), "metrics_port": _free_port(),
                   "usage": {"ledger_path": str(work / "usage.sqlite")}},
        "placement": {"enabled": False},
    }
    server = Server(config, work / "serve.log")
    try:
        server.wait_ready(timeout_s=420)
        yield server
    finally:
        server.stop()


def _odd(shed, summary) -> str:
    """The distinct shapes of what was shed, so a failure says which answer was wrong."""
    shapes = {(o.status, o.error_code, o.openai_shaped, o.retry_after, o.stream) for o in shed}
    return f"shed as (status, code, openai-shaped, Retry-After, stream): {sorted(shapes, key=str)}; {summary}"


def _bodies(seed):
    rng = random.Random(seed)
    return lambda: probe.completion_body(rng.choice(ADAPTERS), stream=rng.random() < 0.3, max_tokens=32, rng=rng)


def test_twice_capacity_is_shed_with_retry_after_and_service_recovers(small_fleet):
    # Warm up first (first requests load adapters and warm the engine: measured with
    # them, "capacity" came out ~20x too low and 2x of it never overloaded anything).
    asyncio.run(probe.measure_capacity(small_fleet.base_url, _bodies(0), concurrency=4, duration_s=4, timeout_s=60))
    capacity, _ = asyncio.run(
        probe.measure_capacity(small_fleet.base_url, _bodies(2), concurrency=4, duration_s=8, timeout_s=60)
    )
    assert capacity > 0
    outcomes, rss = asyncio.run(
        probe.overload(small_fleet.base_url, small_fleet.process.pid, _bodies(1), rate_per_s=2 * capacity, duration_s=15, timeout_s=60)
    )
    summary = probe.summarize(outcomes)

    assert not [o for o in outcomes if o.kind in (probe.TIMEOUT, probe.TRUNCATED, probe.TRANSPORT)], summary  # nothing hangs
    assert {o.status for o in outcomes} <= {200, 429, 503}, summary  # no other 5xx
    shed = [o for o in outcomes if o.status in (429, 503)]
    assert shed, f"2x capacity was never shed: {summary}"
    assert all(o.retry_after for o in shed), _odd(shed, summary)
    # The ingress sheds, at once and in the OpenAI shape: Ray's HTTP proxy does not become
    # the queue (before: it answered a sixth of the 503s itself, in plain text, 10-15 s
    # late). Under CI's CPU starvation the proxy's router still sheds the odd request
    # itself (1 of 49 in one run; plain text, with Retry-After): allowed
    # up to 10%, every other 503 must be the ingress's.
    ours = [o for o in shed if o.openai_shaped and o.error_code == "overloaded"]
    assert len(ours) >= 0.9 * len(shed), _odd(shed, summary)
    assert all(o.openai_shaped or o.error_code is None for o in shed), _odd(shed, summary)  # no other shaped error
    assert summary["kinds"].get(probe.OK, 0) > 0, summary  # admitted requests are still served

    status, _ = probe.recovery_probe(small_fleet.base_url, "poet", timeout_s=30)
    assert status == 200
