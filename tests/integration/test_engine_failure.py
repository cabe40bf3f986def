"""A replica whose vLLM engine dies fails its Ray Serve health check and is replaced,
instead of answering errors forever; meanwhile no request hangs, and the replacement
takes traffic."""

import time

import httpx
import psutil
import pytest

from tests.integration.conftest import NUM_REPLICAS


def _engine_processes(fleet):
    def cmdline(p):
        try:
            return " ".join(p.cmdline())
        except psutil.Error:
            return ""

    tree = psutil.Process(fleet.process.pid).children(recursive=True)
    return [p for p in tree if "EngineCore" in cmdline(p) or "EngineCore" in p.name()]


def _complete(fleet, model="poet"):
    return httpx.post(
        f"{fleet.base_url}/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 2}, timeout=60
    )


def _live_replicas(fleet) -> set[str]:
    replicas = httpx.get(f"{fleet.base_url}/fleet/replicas", timeout=30).json()["replicas"]
    return {r["replica_id"] for r in replicas if r["healthy"]}


@pytest.mark.fleet_disruptive
def test_dead_engine_replica_is_replaced_and_serving_recovers(fleet):
    before = _live_replicas(fleet)
    assert len(before) == NUM_REPLICAS
    engines = _engine_processes(fleet)
    assert len(engines) == NUM_REPLICAS, "expected one vLLM EngineCore process per replica"
    engines[0].kill()

    deadline = time.monotonic() + 300
    statuses = []
    while time.monotonic() < deadline:
        response = _complete(fleet)  # bounded by the client timeout: never hangs
        statuses.append(response.status_code)
        if response.status_code != 200:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] in {"engine_unavailable", "overloaded"}
        live = _live_replicas(fleet)
        if len(live) == NUM_REPLICAS and live - before:
            break
        time.sleep(1)
    live = _live_replicas(fleet)
    replacements = live - before
    assert len(live) == NUM_REPLICAS and replacements, f"no replacement replica; statuses: {statuses[-20:]}"

    # The replacement has free LoRA slots, so cold adapters are routed to it.
    served_by = set()
    for adapter in ["haiku", "translator", "support-bot", "medical-notes", "code-review", "pirate"] * 2:
        response = _complete(fleet, adapter)
        assert response.status_code == 200, response.text
        served_by.add(response.headers["x-lorafleet-replica"])
        if served_by & replacements:
            break
    assert served_by & replacements, f"the replacement replica never served: {served_by}"
    assert all(_complete(fleet).status_code == 200 for _ in range(6))

    # The placement controller re-places: the dead replica leaves the plan and the
    # replacement gets a share of adapters within a few planning periods.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for adapter in ["poet", "haiku", "translator", "pirate"]:
            _complete(fleet, adapter)
        planned = httpx.get(f"{fleet.base_url}/fleet/placement", timeout=30).json()["replicas"]
        share = {rid: p["gpu"] + p["cpu"] for rid, p in planned.items()}
        if not (set(share) - live) and any(share.get(rid) for rid in replacements):
            break
        time.sleep(1)
    assert not (set(share) - live), f"the plan still names dead replicas: {set(share) - live}"
    assert any(share.get(rid) for rid in replacements), f"the replacement got no adapters: {share}"
