"""Two ingress replicas on one PostgreSQL (`server.usage.backend: postgres`,
`deployment.ingress_replicas: 2`), through real Ray Serve: every request counted once
whichever replica took it; one token budget per key, not one per replica; and a
database outage during which requests keep being served, an ingress is SIGKILLed with
its usage only in its journal, and everything adds up once the database is back.

A second application (`lorafleet-pg`, under /pg) on the fast tier's Ray cluster, with
its own keys; the DSN reaches its replicas as an environment variable
(tests/fast/conftest.py), the way a Kubernetes Secret does."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time

import httpx
import psutil
import psycopg
import pytest
import yaml

from factory.demo_assets import BASE_NAME
from tests.fast.conftest import FAKE_ENGINE, POSTGRES_DATABASE, POSTGRES_DSN_ENV, fast_config

APP = "lorafleet-pg"
PREFIX = "/pg"
KEYS = {"admin": "lf-pg-admin", "load": "lf-pg-load", "budget": "lf-pg-budget"}
BUDGET_TPM = 600  # the budget key's tokens per minute: 300 per replica with per-replica buckets


class PgFleet:
    def __init__(self, base_url: str):
        self.api = f"{base_url}{PREFIX}/v1"

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[who]}"}

    def usage_response(self) -> httpx.Response:
        return httpx.get(f"{self.api}/usage", headers=self.auth("admin"), timeout=30)

    def total_requests(self, key_id: str = "load") -> int:
        response = self.usage_response()
        response.raise_for_status()
        return sum(r["requests"] for r in response.json()["data"] if r["key_id"] == key_id)

    async def completions(self, n: int, who: str = "load", max_tokens: int = 3) -> list[int]:
        async with httpx.AsyncClient(timeout=120) as http:
            async def one(i: int) -> int:
                body = {"model": "poet" if i % 2 else BASE_NAME, "prompt": "hi", "max_tokens": max_tokens}
                return (await http.post(f"{self.api}/completions", json=body, headers=self.auth(who))).status_code

            return list(await asyncio.gather(*[one(i) for i in range(n)]))


def _ingress_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if any(f"ServeReplica:{APP}:Ingress" in part for part in (p.info["cmdline"] or []))]


def _ledger_connections(postgres_server) -> int:
    with psycopg.connect(postgres_server.dsn("postgres")) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                            (POSTGRES_DATABASE, "lorafleet-ledger")).fetchone()[0]


def _wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
            if value:
                return value
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def pg_fleet(fast_fleet, postgres_server, demo_assets) -> PgFleet:
    from ray import serve

    from deployments.app import build_graph
    from deployments.config import parse_config
    from deployments.tenancy.keys import hash_key

    postgres_server.create_database(POSTGRES_DATABASE)
    work = fast_fleet.work / "pg"
    # The disruptive test runs last in the tier (tests/fast/conftest.py's ordering), so
    # this module fixture can be set up a second time: start from an empty folder.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    keys_file = work / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"keys": [
        {"id": "admin", "tenant": "ops", "role": "admin", "sha256": hash_key(KEYS["admin"])},
        # a limit far above the load, so every request goes through the shared buckets
        {"id": "load", "tenant": "acme", "role": "tenant", "sha256": hash_key(KEYS["load"]),
         "limits": {"requests_per_second": 10_000}},
        {"id": "budget", "tenant": "beta", "role": "tenant", "sha256": hash_key(KEYS["budget"]),
         "limits": {"tokens_per_minute": BUDGET_TPM}},
    ]}))
    port = int(fast_fleet.base_url.rsplit(":", 1)[1])
    config = fast_config(fast_fleet.store, demo_assets / "base", work, keys_file, port,
                         deployment={"num_replicas": 1, "ingress_replicas": 2})
    config["adapters"]["cache_dir"] = str(work / "cache")  # the journal's default home: node-local
    config["server"]["usage"] = {"backend": "postgres", "postgres_dsn_env": POSTGRES_DSN_ENV, "flush_period_s": 0.2,
                                 "abort_report_timeout_s": 300}
    serve.run(build_graph(parse_config(config), engine_factory=FAKE_ENGINE), name=APP, route_prefix=PREFIX, blocking=False)
    fleet = PgFleet(fast_fleet.base_url)
    _wait_for(lambda: fleet.usage_response().status_code == 200 and len(_ingress_pids()) == 2, 120, "the pg application")
    yield fleet
    serve.delete(APP)


def test_two_ingress_replicas_record_concurrent_requests_exactly_once_in_postgres(pg_fleet, postgres_server):
    before = pg_fleet.total_requests()
    statuses = asyncio.run(pg_fleet.completions(80))
    assert statuses == [200] * 80
    _wait_for(lambda: pg_fleet.total_requests() - before >= 80, 30, "80 requests in the ledger")
    assert _ledger_connections(postgres_server) == 2  # both replicas wrote
    time.sleep(1.0)  # every flush period has passed several times: nothing arrives twice
    assert pg_fleet.total_requests() - before == 80


def test_a_keys_token_budget_is_one_budget_across_both_ingress_replicas(pg_fleet):
    """400 tokens is more than one replica's share of 600 (a 400 with per-replica
    buckets); after it ~200 are left for the whole key (plus 10 a second of refill): of
    six ~102-token requests spread over both replicas exactly two fit, and the third
    would need ~9 s more."""
    assert asyncio.run(pg_fleet.completions(1, who="budget", max_tokens=400)) == [200]
    statuses = asyncio.run(pg_fleet.completions(6, who="budget", max_tokens=100))
    assert sorted(statuses) == [200, 200, 429, 429, 429, 429], statuses


@pytest.mark.fleet_disruptive
def test_requests_are_served_through_a_database_outage_and_an_ingress_sigkill_and_usage_adds_up(pg_fleet, postgres_server):
    before = pg_fleet.total_requests()
    postgres_server.stop()
    try:
        statuses = asyncio.run(pg_fleet.completions(60))
        assert statuses == [200] * 60  # served: limits fell back to each replica's share
        outage = pg_fleet.usage_response()
        assert outage.status_code == 503 and outage.json()["error"]["code"] == "store_unavailable"
        assert "Retry-After" in outage.headers
        victim = _ingress_pids()[0]
        os.kill(victim, signal.SIGKILL)  # its share of the 60 is only in its journal now
    finally:
        postgres_server.start_again()
    _wait_for(lambda: victim not in _ingress_pids() and len(_ingress_pids()) == 2, 90, "the ingress to be replaced")
    _wait_for(lambda: pg_fleet.total_requests() - before >= 60, 60, "the outage's usage in the ledger")
    time.sleep(2.0)  # orphan scans and flushes keep running: still counted once
    assert pg_fleet.total_requests() - before == 60
