"""`lorafleet serve --demo` on a half-built demo folder: the build child reports the base
at once (kept from an earlier run), trains the adapter it is asked for into its staging
folder, and the server publishes it through the registry, where the fleet serves it.

The adapter trained this way must be the same bytes `lorafleet demo-assets` produces
(same seeds, same functions): the demo a person sees is the one the tests check."""

from __future__ import annotations

import shutil
import time

import httpx

from tests.conftest import TEST_ASSETS

ADAPTER = "sql-helper"  # rank 8 on three modules: the cheapest demo adapter to train (~30 s on one core)


def _half_built(demo_assets):
    """A demo folder as an interrupted `make demo` leaves it: the base pretrained (and
    marked), no adapters, not complete."""
    from factory.demo_assets import BASE_FILE, demo_digest, is_complete

    folder = TEST_ASSETS / "fast-demo-build"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(demo_assets / "base", folder / "base")
    (folder / BASE_FILE).write_text(demo_digest() + "\n")
    assert not is_complete(folder)
    return folder


def test_a_trained_demo_adapter_is_published_through_the_registry_and_served(fast_fleet, demo_assets):
    from deployments.cli.demo import DemoBuild, publish

    folder = _half_built(demo_assets)
    build = DemoBuild(folder)
    build.start()
    try:
        base = build.next_event(timeout=60)
        assert base is not None and base["event"] == "base", build.log_tail()
        assert base["built"] is False  # the pretrained base was kept
        assert (folder / "adapters").is_dir()  # the store exists before the fleet starts on it
        build.train([ADAPTER])
        event = build.next_event(timeout=600)
        assert event is not None and event["event"] == "adapter" and event["name"] == ADAPTER, build.log_tail()
        staged = folder / ".staging" / ADAPTER
        assert event["folder"] == str(staged)
        reference = demo_assets / "adapters" / ADAPTER / "adapter_model.safetensors"
        assert (staged / "adapter_model.safetensors").read_bytes() == reference.read_bytes()
        assert build.next_event(timeout=60)["event"] == "done"
    finally:
        build.stop()

    name = f"{ADAPTER}-fresh"  # the fast fleet's store already serves the demo's own copy
    manifest = publish(fast_fleet.base_url, name, staged, api_key=fast_fleet.keys["admin"])
    assert manifest["id"] == f"{name}@1"
    deadline = time.monotonic() + 30
    while True:
        response = httpx.post(f"{fast_fleet.api}/completions", headers=fast_fleet.auth(),
                              json={"model": name, "prompt": "upper: fleet\n", "max_tokens": 2}, timeout=30)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"].startswith(f"{name}@1:0")  # the fake engine names the adapter it ran


def test_stopping_the_build_ends_its_training_processes_at_once(demo_assets):
    import psutil

    from deployments.cli.demo import DemoBuild

    folder = _half_built(demo_assets)
    build = DemoBuild(folder)
    build.start()
    assert build.next_event(timeout=60)["event"] == "base"
    build.train([ADAPTER, "poet"])
    deadline = time.monotonic() + 60
    parent = psutil.Process(build.process.pid)
    while len(parent.children(recursive=True)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the two training workers are up
    workers = parent.children(recursive=True)
    assert workers
    started = time.monotonic()
    build.stop()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, alive
    assert build.process.poll() is not None
    assert not (folder / ".recipe-sha256").exists()
    print(f"build stopped in {time.monotonic() - started:.2f} s")
