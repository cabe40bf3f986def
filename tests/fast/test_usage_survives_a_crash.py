"""Usage survives an ingress SIGKILLed under load: every request answered before the kill
is in the ledger afterwards (the write-ahead journal, deployments/tenancy/journal.py),
counted once. On the code before the journal, the usage recorded since the last flush
(up to `server.usage.flush_period_s`, 0.5 s by default, plus any backlog) was lost; here
the flush period is raised to a minute so that nothing but the journal can save it."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import psutil
import pytest

from factory.demo_assets import BASE_NAME


def _ingress_pids() -> list[int]:
    """The fast fleet's ingress: a descendant of this test process (its Ray cluster was
    started here), never another fleet's on the same machine."""
    return [p.pid for p in psutil.Process(os.getpid()).children(recursive=True)
            if any("ServeReplica:lorafleet:Ingress" in part for part in p.cmdline())]


def _total_requests(fleet) -> int:
    return sum(r["requests"] for r in fleet.usage())


@pytest.mark.fleet_disruptive
def test_an_ingress_sigkilled_under_load_loses_no_answered_request(fast_fleet):
    before = _total_requests(fast_fleet)

    async def load(n: int) -> int:
        async with httpx.AsyncClient(timeout=60) as http:
            async def one(i):
                body = {"model": "poet" if i % 2 else BASE_NAME, "prompt": "hi", "max_tokens": 3}
                r = await http.post(f"{fast_fleet.api}/completions", json=body, headers=fast_fleet.auth("acme"))
                return r.status_code == 200

            return sum(await asyncio.gather(*[one(i) for i in range(n)]))

    answered = asyncio.run(load(40))
    [pid] = _ingress_pids()
    os.kill(pid, signal.SIGKILL)  # right after the answers: nothing flushed them yet
    deadline = time.monotonic() + 90
    while True:
        try:
            total = _total_requests(fast_fleet)
            break
        except (httpx.HTTPError, KeyError, ValueError):
            if time.monotonic() > deadline:
                pytest.fail("the ingress was not replaced within 90 s")
            time.sleep(0.5)
    assert answered == 40
    assert total - before == answered
