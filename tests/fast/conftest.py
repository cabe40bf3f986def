"""The fast tier: real Ray Serve (ingress, adapter-aware router, fleet controller, engine
replicas) with a fake engine (tests/fast/fake_engine.py) instead of vLLM.

One local Ray cluster and one application per session, started in-process with the
product's own builder (`deployments.app.build_graph`), auth on with two tenants. It
starts in ~15 s; tests here cover the Ray glue that unit tests cannot (routing on
replica stats, the controller's plans, billing across the engine/controller/ingress
round trip) without the minutes a vLLM fleet costs.
"""

from __future__ import annotations

import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO, TEST_ASSETS

FAKE_ENGINE = "tests.fast.fake_engine:FakeEngine"
# The PostgreSQL DSN of tests/fast/test_postgres_ingress.py's application, handed to every
# Ray worker the way a Secret reaches them on Kubernetes: as an environment variable.
POSTGRES_DSN_ENV = "LORAFLEET_FAST_USAGE_DSN"
POSTGRES_DATABASE = "fast_usage"
TENANTS = ("acme", "beta")
NUM_REPLICAS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FastFleet:
    base_url: str
    keys: dict[str, str]
    store: Path
    work: Path

    @property
    def api(self) -> str:
        return f"{self.base_url}/v1"

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def usage(self) -> list[dict]:
        return httpx.get(f"{self.api}/usage", headers=self.auth(), timeout=30).json()["data"]

    def replicas(self) -> list[dict]:
        return httpx.get(f"{self.base_url}/fleet/replicas", headers=self.auth(), timeout=30).json()["replicas"]


def fast_config(store: Path, base: Path, work: Path, keys_file: Path, port: int, **overrides) -> dict:
    from factory.demo_assets import BASE_NAME

    config = {
        "model": {"source": str(base), "served_name": BASE_NAME},
        "engine": {"max_loras": 2, "max_cpu_loras": 4},
        "deployment": {"num_replicas": NUM_REPLICAS, "replica_cpus": 0.1, "ingress_cpus": 0.1,
                       "health_check_period_s": 1, "stats_report_period_s": 0.5},
        "adapters": {"uri": str(store), "cache_dir": str(work / "cache")},
        "server": {"host": "127.0.0.1", "port": port,
                   "auth": {"enabled": True, "keys_file": str(keys_file)},
                   "usage": {"ledger_path": str(work / "usage.sqlite"), "flush_period_s": 60,
                             # far longer than any test waits: a bill must come from the engine's report
                             "abort_report_timeout_s": 300}},
        "routing": {"stats_period_s": 0.2},
        "placement": {"settings": {"period_s": 1}},
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values}
    return config


@pytest.fixture(scope="package")  # down before the next tier starts its own fleets
def fast_fleet(demo_assets, postgres_server) -> FastFleet:
    import ray
    from ray import serve

    from deployments.app import APP_NAME, build_graph
    from deployments.config import parse_config
    from deployments.tenancy.keys import hash_key

    work = TEST_ASSETS / "fast"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = work / "adapters"
    shutil.copytree(demo_assets / "adapters", store, ignore=shutil.ignore_patterns(".lorafleet"))
    keys = {"admin": "lf-fast-admin", **{t: f"lf-fast-{t}" for t in TENANTS}}
    entries = [{"id": "admin", "tenant": "ops", "role": "admin", "sha256": hash_key(keys["admin"])}]
    entries += [{"id": t, "tenant": t, "role": "tenant", "sha256": hash_key(keys[t])} for t in TENANTS]
    keys_file = work / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"keys": entries}))
    port = _free_port()
    config = parse_config(fast_config(store, demo_assets / "base", work, keys_file, port))

    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0",
                                       POSTGRES_DSN_ENV: postgres_server.dsn(POSTGRES_DATABASE)}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_graph(config, engine_factory=FAKE_ENGINE), name=APP_NAME, route_prefix="/", blocking=False)
        fleet = FastFleet(f"http://127.0.0.1:{port}", keys, store, work)
        deadline = time.monotonic() + 120
        while True:
            try:
                if len(fleet.replicas()) == NUM_REPLICAS:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("the fast-tier application did not come up in 120 s")
            time.sleep(0.5)
        yield fleet
    finally:
        serve.shutdown()
        ray.shutdown()

