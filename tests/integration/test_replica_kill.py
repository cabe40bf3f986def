"""An engine replica's process is SIGKILLed in the middle of a load test.

What a user relies on: no request hangs (every request has a client-side timeout and
none hits it); requests that got no answer yet are retried once on another replica
and succeed; streams cut mid-way end with an OpenAI error event and `[DONE]`; Ray
Serve starts a replacement, the placement controller drops the dead replica from its
plan, and the killed replica's vLLM EngineCore does not linger as an orphan.
"""

import asyncio
import time

import httpx
import psutil
import pytest

from bench.harness import probe
from tests.integration.conftest import NUM_REPLICAS

MODELS = ["poet", "haiku", "translator", "pirate", "support-bot"]


def _wait_healthy(fleet, timeout_s=300) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        live = probe.live_replicas(fleet.base_url)
        if len(live) == NUM_REPLICAS and len(probe.engine_replica_processes(fleet.process.pid)) == NUM_REPLICAS:
            return live
        time.sleep(1)
    pytest.fail(f"the fleet did not get back to {NUM_REPLICAS} healthy replicas:\n{fleet.log_tail()}")


@pytest.mark.fleet_disruptive
def test_killing_a_replica_mid_load_loses_no_unanswered_request_and_the_fleet_recovers(fleet):
    for attempt in range(3):
        before = _wait_healthy(fleet)  # an earlier disruptive test (or attempt) may still be recovering
        outcomes, kill = asyncio.run(
            probe.load_with_kill(fleet.base_url, fleet.process.pid, MODELS, concurrency=8, duration_s=14, kill_at_s=4,
                                 timeout_s=90, max_tokens=96)  # long enough that a stream taken 0.3 s ago is mid-way
        )
        assert len(kill.engine_cores) == 1, "expected the killed replica process to own one vLLM EngineCore"
        summary = probe.summarize(outcomes)
        # The victim had just taken a stream; if that stream still finished before the
        # kill, the scenario under test (a kill that hits requests) did not happen: again.
        hit = [o for o in outcomes if o.retried or o.kind == probe.STREAM_CUT]
        if hit:
            break
        probe.wait_recovered(fleet.base_url, before, NUM_REPLICAS, timeout_s=300, model="poet")
    on_victim = [(round(o.started_s, 2), round(o.latency_s, 2), o.stream) for o in outcomes if o.replica == kill.replica_id]
    assert hit, (f"in 3 tries, no kill was seen by a request; last: {kill.replica_id} (pid {kill.pid}, "
                 f"{kill.open_streams} fresh streams) at {kill.at_s:.2f} s: {summary}; it served (start, latency, stream): {on_victim}")

    # No hang, no stream ended without [DONE], no transport failure.
    assert not [o for o in outcomes if o.kind in (probe.TIMEOUT, probe.TRUNCATED, probe.TRANSPORT)], summary
    # Requests without an answer yet (all non-streamed ones) were retried and succeeded.
    assert all(o.kind == probe.OK for o in outcomes if not o.stream), summary
    # A stream cut by the kill ended in-band with an OpenAI error, then [DONE].
    cut = [o for o in outcomes if o.kind == probe.STREAM_CUT]
    assert all(o.openai_shaped and o.error_code == "engine_unavailable" for o in cut), summary
    assert all(o.kind in (probe.OK, probe.STREAM_CUT) for o in outcomes), summary

    # The killed replica's EngineCore exits with it (no ~630 MB orphan per kill).
    gone, alive = psutil.wait_procs(kill.engine_cores, timeout=30)
    assert not alive, f"orphaned EngineCore left behind: {[p.pid for p in alive]}"

    # Serve replaces the replica; the fleet serves again with NUM_REPLICAS replicas.
    recovered_s = probe.wait_recovered(fleet.base_url, before, NUM_REPLICAS, timeout_s=300, model="poet")
    assert recovered_s is not None, f"no replacement replica within 300 s:\n{fleet.log_tail()}"
    live = _wait_healthy(fleet)
    dead = before - live
    assert len(dead) == 1

    # The placement controller drops the dead replica from its plan and gives the
    # replacement a share.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for model in MODELS:
            httpx.post(f"{fleet.base_url}/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 2}, timeout=60)
        planned = httpx.get(f"{fleet.base_url}/fleet/placement", timeout=30).json()["replicas"]
        share = {rid: p["gpu"] + p["cpu"] for rid, p in planned.items()}
        if not (set(share) & dead) and any(share.get(rid) for rid in live - before):
            break
        time.sleep(1)
    assert not (set(share) & dead), f"the plan still names the dead replica: {share}"
    assert any(share.get(rid) for rid in live - before), f"the replacement got no adapters: {share}"
    print(f"kill at {kill.at_s:.1f}s of the load; replacement serving {recovered_s:.1f}s after the load ended; {summary}")
