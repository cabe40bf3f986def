"""A replica whose vLLM engine dies fails its Ray Serve health check and is replaced,
instead of answering errors forever; meanwhile no request hangs."""

import time

import httpx
import psutil
import pytest


def _engine_processes(fleet):
    tree = psutil.Process(fleet.process.pid).children(recursive=True)
    return [p for p in tree if "EngineCore" in " ".join(_safe_cmdline(p)) or "EngineCore" in p.name()]


def _safe_cmdline(p):
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _complete(fleet, model="poet"):
    return httpx.post(
        f"{fleet.base_url}/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 2}, timeout=60
    )


@pytest.mark.fleet_disruptive
def test_dead_engine_replica_is_replaced_and_serving_recovers(fleet):
    before = {_complete(fleet).headers["x-lorafleet-replica"] for _ in range(8)}
    engines = _engine_processes(fleet)
    assert len(engines) >= 2, "expected one vLLM EngineCore process per replica"
    engines[0].kill()

    deadline = time.monotonic() + 240
    statuses, new_replicas, streak = [], set(), 0
    while time.monotonic() < deadline and not (new_replicas and streak >= 6):
        response = _complete(fleet)  # bounded by the client timeout: never hangs
        statuses.append(response.status_code)
        if response.status_code == 200:
            streak += 1
            replica = response.headers["x-lorafleet-replica"]
            if replica not in before:
                new_replicas.add(replica)
        else:
            streak = 0
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] in {"engine_unavailable", "overloaded"}
            time.sleep(0.5)
    assert new_replicas, f"no replacement replica served a request; statuses seen: {statuses[-20:]}"
    assert streak >= 6
