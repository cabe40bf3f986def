"""The adapter registry on the real fleet (3 vLLM replicas): an adapter published
through the API is served by every replica without a restart, versions are distinct
LoRAs, a deleted adapter 404s while in-flight requests finish, a corrupted one is
refused with a clear error, and the `lorafleet adapters` CLI drives it all."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import httpx
import openai
import pytest

from adapters.archive import pack_folder
from tests.conftest import REPO
from tests.integration.conftest import NUM_REPLICAS

PROMPT = "Write about the sea"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _push(fleet, folder, name, **fields) -> httpx.Response:
    return httpx.post(
        f"{fleet.api}/adapters", data={"name": name, **fields},
        files={"file": ("a.tar.gz", pack_folder(folder), "application/gzip")}, timeout=120,
    )


def _complete(client, model, max_tokens=8):
    return client.completions.create(model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0)


@pytest.fixture
def demo_adapters(demo_assets):
    return demo_assets / "adapters"


@pytest.fixture
def published(fleet):
    """Names published by a test; deleted afterwards so the shared fleet stays as it was."""
    names: list[str] = []
    yield names
    for name in names:
        httpx.delete(f"{fleet.api}/adapters/{name}", timeout=60)


def test_a_pushed_adapter_is_served_on_every_replica_without_restart(fleet, client, demo_adapters, published):
    name = _unique("fresh")
    published.append(name)
    response = _push(fleet, demo_adapters / "haiku", name)
    assert response.status_code == 201, response.text
    first = _complete(client, name)
    assert first.model == f"{name}@1"
    assert first.choices[0].text == _complete(client, "haiku").choices[0].text  # the uploaded weights, exactly
    assert name in {m.id for m in client.models.list().data}

    async def burst(i0):
        async with httpx.AsyncClient(timeout=300) as http:
            async def one(i):
                r = await http.post(f"{fleet.api}/completions",
                                    json={"model": name, "prompt": f"burst {i}", "max_tokens": 48, "temperature": 0})
                assert r.status_code == 200, r.text
                return r.headers["x-lorafleet-replica"]

            return await asyncio.gather(*[one(i0 + i) for i in range(48)])

    served = Counter()
    for round_no in range(4):  # the router spreads a hot adapter once its holder saturates
        served.update(asyncio.run(burst(round_no * 100)))
        if len(served) == NUM_REPLICAS:
            break
    assert len(served) == NUM_REPLICAS, f"served by {dict(served)}"
    time.sleep(2.5)  # > stats_report_period_s
    replicas = httpx.get(f"{fleet.base_url}/fleet/replicas", timeout=30).json()["replicas"]
    assert all(r["per_adapter_requests"].get(f"{name}@1", 0) > 0 for r in replicas), replicas


def test_versions_are_distinct_adapters_and_the_name_means_the_latest(fleet, client, demo_adapters, published):
    name = _unique("versioned")
    published.append(name)
    assert _push(fleet, demo_adapters / "haiku", name).json()["version"] == "1"
    v1 = _complete(client, name).choices[0].text  # v1 is now resident on some replica
    assert _push(fleet, demo_adapters / "pirate", name).json()["version"] == "2"
    pirate = _complete(client, "pirate").choices[0].text
    assert pirate != v1
    latest = _complete(client, name)
    assert (latest.model, latest.choices[0].text) == (f"{name}@2", pirate)  # never the stale v1
    pinned = _complete(client, f"{name}@1")
    assert (pinned.model, pinned.choices[0].text) == (f"{name}@1", v1)
    conflict = _push(fleet, demo_adapters / "poet", name, version="2")
    assert conflict.status_code == 409 and f"{name}@2" in conflict.json()["error"]["message"]


def test_delete_lets_in_flight_requests_finish_and_new_ones_404(fleet, client, demo_adapters, published):
    name = _unique("doomed")
    published.append(name)
    assert _push(fleet, demo_adapters / "poet", name).status_code == 201
    _complete(client, name, max_tokens=2)
    finish_reasons, usage = [], []
    started, resume, finished = threading.Event(), threading.Event(), threading.Event()

    def stream():
        for chunk in client.completions.create(model=name, prompt=PROMPT, max_tokens=400, temperature=0,
                                               stream=True, stream_options={"include_usage": True},
                                               extra_body={"ignore_eos": True}):
            if chunk.choices and chunk.choices[0].finish_reason:
                finish_reasons.append(chunk.choices[0].finish_reason)
            if chunk.usage:
                usage.append(chunk.usage.completion_tokens)
            if not started.is_set():
                started.set()
                resume.wait(60)  # hold the response open (unread) until the delete is done
        finished.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(60)
    deleted = httpx.delete(f"{fleet.api}/adapters/{name}", timeout=60)
    assert deleted.json() == {"deleted": [f"{name}@1"]}
    assert not finished.is_set()  # the stream is still open: the request is in flight
    resume.set()
    reader.join(120)
    assert finished.is_set()
    # Tokens, not chunks: the engine sends several tokens per chunk (engine.stream_interval).
    assert finish_reasons == ["length"] and usage == [400], f"the in-flight stream was cut off by the delete: {finish_reasons} {usage}"
    with pytest.raises(openai.NotFoundError) as err:
        _complete(client, name)
    assert name in err.value.body["message"]
    assert name not in {m.id for m in client.models.list().data}


def test_a_corrupted_version_is_refused_with_a_clear_error(fleet, client, demo_adapters, published):
    name = _unique("corrupt")
    published.append(name)
    assert _push(fleet, demo_adapters / "sql-helper", name).status_code == 201
    weights = fleet.assets / "adapters" / name / "1" / "files" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0xFF
    weights.write_bytes(bytes(data))  # bit rot in the store before any replica loaded it
    with pytest.raises(openai.InternalServerError) as err:
        _complete(client, name)
    assert "corrupted" in err.value.body["message"] and "adapter_model.safetensors" in err.value.body["message"]
    assert err.value.body["code"] == "adapter_load_failed"
    assert _complete(client, "poet", max_tokens=2).choices  # the fleet is unharmed


def test_a_bad_upload_changes_nothing_on_the_fleet(fleet, demo_adapters, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(demo_adapters / "haiku", bad)
    (bad / "adapter_model.bin").write_bytes(b"\x80\x04 not a pickle")
    before = httpx.get(f"{fleet.api}/adapters", timeout=30).json()
    response = _push(fleet, bad, _unique("bad"))
    assert response.status_code == 400
    assert "pickle" in response.json()["error"]["message"]
    assert httpx.get(f"{fleet.api}/adapters", timeout=30).json() == before


def test_concurrent_pushes_of_one_name_get_distinct_versions(fleet, client, demo_adapters, published):
    name = _unique("race")
    published.append(name)

    async def pushes():
        async with httpx.AsyncClient(timeout=120) as http:
            async def one(folder):
                # As a well-behaved client: a 503 (adapters.max_concurrent_uploads reached)
                # is retried after its Retry-After.
                for _ in range(30):
                    response = await http.post(f"{fleet.api}/adapters", data={"name": name},
                                               files={"file": ("a.tar.gz", pack_folder(folder), "application/gzip")})
                    if response.status_code != 503:
                        return response
                    await asyncio.sleep(float(response.headers["Retry-After"]))
                return response

            return await asyncio.gather(*[one(demo_adapters / a) for a in ("haiku", "pirate", "poet", "haiku")])

    responses = asyncio.run(pushes())
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    assert sorted(int(r.json()["version"]) for r in responses) == [1, 2, 3, 4]
    shown = httpx.get(f"{fleet.api}/adapters/{name}", timeout=30).json()
    assert shown["versions"] == ["1", "2", "3", "4"]
    for r in responses:
        assert _complete(client, r.json()["id"], max_tokens=2).model == r.json()["id"]


def _cli(fleet, *args):
    return subprocess.run([sys.executable, "-m", "deployments.cli", "adapters", *args, "--url", fleet.base_url],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_push_list_show_pull_rm(fleet, client, demo_adapters, published, tmp_path):
    name = _unique("cli")
    published.append(name)
    pushed = _cli(fleet, "push", str(demo_adapters / "translator"), "--name", name, "--visibility", "private")
    assert pushed.returncode == 0, pushed.stderr
    assert f"published {name}@1" in pushed.stdout
    listed = _cli(fleet, "list")
    assert listed.returncode == 0 and any(line.startswith(name) and "servable" in line for line in listed.stdout.splitlines())
    shown = _cli(fleet, "show", f"{name}@1")
    assert shown.returncode == 0 and '"visibility": "private"' in shown.stdout
    pulled = _cli(fleet, "pull", name, "--out", str(tmp_path / "copy"))
    assert pulled.returncode == 0, pulled.stderr
    for path in (demo_adapters / "translator").iterdir():
        assert (tmp_path / "copy" / path.name).read_bytes() == path.read_bytes()
    assert _complete(client, name, max_tokens=2).model == f"{name}@1"
    removed = _cli(fleet, "rm", name)
    assert removed.returncode == 0 and f"deleted {name}@1" in removed.stdout


def test_cli_errors_print_the_servers_message_and_exit_nonzero(fleet, demo_adapters, tmp_path):
    missing = _cli(fleet, "show", "no-such-adapter")
    assert missing.returncode == 1 and "404" in missing.stderr and "does not exist" in missing.stderr
    bad = tmp_path / "bad"
    shutil.copytree(demo_adapters / "haiku", bad)
    (bad / "adapter_config.json").write_text("{broken")
    refused = _cli(fleet, "push", str(bad), "--name", _unique("bad"))
    assert refused.returncode == 1 and "400" in refused.stderr and "not valid JSON" in refused.stderr
    no_folder = _cli(fleet, "push", str(tmp_path / "nowhere"), "--name", "x")
    assert no_folder.returncode == 2 and "not a folder" in no_folder.stderr
