"""Adapter-aware autoscaling through real Ray Serve (fake engines): a load ramp takes
the engine deployment from 1 to 3 replicas and back to 1, and no request is lost
while replicas are removed.

A third application (`lorafleet-autoscale`, under /as) on the fast tier's Ray
cluster with `autoscaling.enabled`: the fleet controller decides, the replicas relay
the target, and Ray Serve's controller runs lorafleet's custom policy. With a
do-nothing policy (or the decision never reaching Ray) the deployment stays at one
replica and the test fails at the first wait.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from ray import serve

from tests.fast.conftest import FAKE_ENGINE, fast_config

APP = "lorafleet-autoscale"
PREFIX = "/as"
ADAPTERS = ("poet", "haiku", "translator")
MAX_TOKENS = 100  # 0.5 s of fake decoding per request


def _engine_replicas() -> int:
    app = serve.status().applications.get(APP)
    if app is None or "EngineReplica" not in app.deployments:
        return 0
    return app.deployments["EngineReplica"].replica_states.get("RUNNING", 0)


def _wait_for(condition, timeout_s: float, what: str, seen: list[int]):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}; replica counts seen: {seen}")
        time.sleep(0.5)


class Load:
    """`clients` closed-loop clients in a thread until stopped; every outcome kept."""

    def __init__(self, api: str, headers: dict, clients: int):
        self.api, self.headers, self.clients = api, headers, clients
        self.outcomes: list[tuple[int, int | None]] = []  # (status, completion tokens)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(120)

    async def _run(self):
        async with httpx.AsyncClient(timeout=120) as http:
            async def client(i: int):
                n = 0
                while not self._stop.is_set():
                    body = {"model": ADAPTERS[(i + n) % len(ADAPTERS)], "prompt": "hi", "max_tokens": MAX_TOKENS}
                    n += 1
                    try:
                        response = await http.post(f"{self.api}/completions", json=body, headers=self.headers)
                        tokens = response.json()["usage"]["completion_tokens"] if response.status_code == 200 else None
                        self.outcomes.append((response.status_code, tokens))
                    except httpx.HTTPError as err:
                        self.outcomes.append((0, None))
                        print("transport error:", err)
                    if response.status_code != 200:
                        await asyncio.sleep(0.2)
            await asyncio.gather(*[client(i) for i in range(self.clients)])


@pytest.fixture(scope="module")
def autoscaled(fast_fleet, demo_assets):
    from deployments.app import build_graph
    from deployments.config import parse_config

    work = fast_fleet.work / "autoscale"
    work.mkdir(exist_ok=True)
    port = int(fast_fleet.base_url.rsplit(":", 1)[1])
    config = fast_config(fast_fleet.store, demo_assets / "base", work, fast_fleet.work / "keys.yaml", port,
                         engine={"max_num_seqs": 4},
                         deployment={"num_replicas": 1, "drain_timeout_s": 30},
                         placement={"settings": {"period_s": 1, "half_life_s": 3}},
                         autoscaling={"enabled": True, "settings": {
                             "min_replicas": 1, "max_replicas": 3, "period_s": 1, "startup_s": 2,
                             "demand_lag_s": 4, "downscale_delay_s": 4, "ttft_slo_s": 1.0}})
    config["adapters"]["cache_dir"] = str(work / "cache")
    config["server"]["max_queue_wait_s"] = 60  # queue at the ingress rather than refuse: the ramp is the signal
    serve.run(build_graph(parse_config(config), engine_factory=FAKE_ENGINE), name=APP, route_prefix=PREFIX, blocking=False)
    seen: list[int] = []
    _wait_for(lambda: _engine_replicas() == 1, 120, "the autoscaled application", seen)
    yield f"{fast_fleet.base_url}{PREFIX}/v1", fast_fleet.auth("acme")
    serve.delete(APP)


def test_a_load_ramp_scales_the_engines_from_one_to_three_and_back_without_losing_a_request(autoscaled):
    api, headers = autoscaled
    seen: list[int] = []

    def at(count):
        seen.append(_engine_replicas())
        return seen[-1] == count

    with Load(api, headers, clients=24) as ramp:  # 6x what one replica's 4 seats take
        _wait_for(lambda: at(3), 90, "3 engine replicas under the ramp", seen)
    with Load(api, headers, clients=1) as trickle:  # a request in flight while replicas go
        _wait_for(lambda: at(1), 120, "1 engine replica after the ramp", seen)
    # While replicas are removed nothing is lost: every request answered in full.
    assert trickle.outcomes, "no request ran while the fleet shrank"
    lost = [o for o in trickle.outcomes if o != (200, MAX_TOKENS)]
    assert not lost, f"{len(lost)} of {len(trickle.outcomes)} requests failed or were cut during scale-down: {lost[:10]}"
    # Under the ramp (6x one replica's seats) the ingress may shed with 503 before the new
    # replicas serve (seen: 5 of 127 in a full-suite run); nothing else, and nothing cut.
    odd = [o for o in ramp.outcomes if o != (200, MAX_TOKENS) and o[0] != 503]
    assert not odd, f"{len(odd)} of {len(ramp.outcomes)} ramp requests failed other than shed or were cut: {odd[:10]}"
