"""The adapter store on a real S3-compatible server (moto's standalone server on
127.0.0.1): publishing, atomic visibility, integrity on load, versions under
concurrency, deletion, a second process's view, name claims, quotas, streaming and
a base model read from the bucket. No Ray, no engines."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import boto3
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.testclient import TestClient

from adapters.archive import ArchiveLimits, extract_adapter_archive
from adapters.errors import AdapterExists, AdapterInvalid, AdapterLoadError, AdapterNotFound, NameTaken, QuotaExceeded
from adapters.quota import TenantQuota
from adapters.store import open_store
from adapters.store_s3 import S3Backend
from adapters.validation import PROJECTION_MODULES
from adapters.errors import LorafleetError
from deployments.api.http_errors import to_http_error
from deployments.api.registry import Registry
from deployments.config import AdapterStoreConfig
from deployments.tenancy.admission import AdmissionGate
from deployments.tenancy.keys import anonymous


def _open(s3_bucket, base_info, tmp_path, prefix="adapters", cache="cache"):
    endpoint, bucket = s3_bucket
    return open_store(
        f"s3://{bucket}/{prefix}", base=base_info, max_lora_rank=16, allowed_target_modules=PROJECTION_MODULES,
        cache_dir=str(tmp_path / cache), s3_endpoint_url=endpoint, refresh_s=0,
    )


@pytest.fixture
def store(s3_bucket, base_info, tmp_path):
    return _open(s3_bucket, base_info, tmp_path)


@pytest.fixture
def haiku(demo_assets):
    return demo_assets / "adapters" / "haiku"


def _keys(s3_bucket) -> list[str]:
    endpoint, bucket = s3_bucket
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_publish_then_a_replica_downloads_a_verified_copy(store, s3_bucket, haiku, base_info, tmp_path):
    manifest = store.publish(haiku, "custom", owner="team-a")
    keys = _keys(s3_bucket)
    assert "adapters/custom/1/manifest.json" in keys
    assert "adapters/custom/1/files/adapter_model.safetensors" in keys
    # Another process (an engine replica on another node) with its own cache.
    replica = _open(s3_bucket, base_info, tmp_path, cache="replica-cache")
    spec = replica.resolve("custom")
    assert (spec.version, spec.owner, spec.fingerprint, spec.served_id) == ("1", "team-a", manifest.fingerprint, "custom@1")
    assert spec.path.startswith("s3://")
    local = replica.materialize(spec)
    assert local.startswith(str(tmp_path / "replica-cache"))
    assert sorted(p.name for p in Path(local).iterdir()) == sorted(manifest.files)
    assert [s.name for s in replica.list_valid()] == ["custom"]


def test_an_adapter_with_an_empty_file_round_trips(store, haiku, tmp_path):
    folder = tmp_path / "with-empty"
    shutil.copytree(haiku, folder)
    (folder / "README.md").write_bytes(b"")
    store.publish(folder, "custom")
    local = Path(store.materialize(store.resolve("custom")))
    assert (local / "README.md").read_bytes() == b""


def test_crash_before_the_manifest_leaves_nothing_visible(store, s3_bucket, haiku, monkeypatch):
    def crash(self, name, version, manifest):
        raise KeyboardInterrupt("killed after uploading the weights")

    monkeypatch.setattr(S3Backend, "_put_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        store.publish(haiku, "custom")
    assert any(k.endswith("adapter_model.safetensors") for k in _keys(s3_bucket))  # weights are there...
    assert store.names() == []  # ...but the version is not
    with pytest.raises(AdapterNotFound):
        store.resolve("custom")
    monkeypatch.undo()
    assert store.publish(haiku, "custom").version == "2"  # the crashed number is never reused


def test_a_corrupted_object_is_refused_when_a_replica_loads(store, s3_bucket, haiku):
    store.publish(haiku, "custom")
    spec = store.resolve("custom")
    endpoint, bucket = s3_bucket
    client = boto3.client("s3", endpoint_url=endpoint)
    key = "adapters/custom/1/files/adapter_model.safetensors"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    with pytest.raises(AdapterLoadError, match="corrupted") as err:
        store.materialize(spec)
    assert not err.value.retriable
    assert not (store.cache_dir / spec.fingerprint).exists()


def test_concurrent_uploads_get_distinct_versions_and_explicit_ones_conflict(store, haiku, demo_assets):
    results, errors = [], []

    def upload(folder, version=None):
        try:
            results.append(store.publish(folder, "custom", version=version))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    folders = [haiku, demo_assets / "adapters" / "pirate"] * 2
    threads = [threading.Thread(target=upload, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(int(m.version) for m in results) == [1, 2, 3, 4]
    for m in results:
        spec = store.resolve(f"custom@{m.version}")
        assert spec.fingerprint == m.fingerprint
        store.materialize(spec)

    results.clear()
    threads = [threading.Thread(target=upload, args=(f, "9")) for f in folders[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1 and len(errors) == 1 and isinstance(errors[0], AdapterExists)
    assert store.resolve("custom@9").fingerprint == results[0].fingerprint


def test_delete_hides_at_once_and_numbers_are_not_reused(store, haiku):
    store.publish(haiku, "custom")
    store.publish(haiku, "custom")
    assert store.delete("custom@2") == ["custom@2"]
    assert store.resolve("custom").version == "1"
    assert store.publish(haiku, "custom").version == "3"
    assert sorted(store.delete("custom")) == ["custom@1", "custom@3"]
    with pytest.raises(AdapterNotFound):
        store.resolve("custom")


def test_import_from_s3_through_the_api(store, s3_bucket, haiku):
    endpoint, bucket = s3_bucket
    client = boto3.client("s3", endpoint_url=endpoint)
    for path in haiku.iterdir():
        client.upload_file(str(path), bucket, f"incoming/haiku/{path.name}")
    settings = AdapterStoreConfig(uri=f"s3://{bucket}/adapters", s3_endpoint_url=endpoint,
                                  import_roots=[f"s3://{bucket}/incoming"])
    registry = Registry(store, settings, AdmissionGate(2))
    app = FastAPI()

    @app.post("/v1/adapters")
    async def create(request: Request):
        try:
            return await registry.create(request, anonymous())  # auth off: the operator imports
        except LorafleetError as err:
            http = to_http_error(err)
            return Response(http.body, status_code=http.status, media_type="application/json")

    api = TestClient(app)
    response = api.post("/v1/adapters", json={"name": "from-s3", "uri": f"s3://{bucket}/incoming/haiku"})
    assert response.status_code == 200, response.text
    assert response.json()["source"] == "import"
    assert store.resolve("from-s3").version == "1"
    response = api.post("/v1/adapters", json={"name": "nothing", "uri": f"s3://{bucket}/incoming/missing"})
    assert response.status_code == 400 and "nothing to import" in response.json()["error"]["message"]
    for outside in (f"s3://{bucket}/adapters/from-s3/1/files", f"s3://{bucket}/elsewhere", f"s3://{bucket}/incoming-not"):
        response = api.post("/v1/adapters", json={"name": "nope", "uri": outside})
        assert response.status_code == 403, (outside, response.text)


def test_a_listing_is_cached_for_refresh_s(s3_bucket, base_info, tmp_path, haiku):
    endpoint, bucket = s3_bucket
    writer = _open(s3_bucket, base_info, tmp_path)
    reader = open_store(
        f"s3://{bucket}/adapters", base=base_info, max_lora_rank=16, allowed_target_modules=PROJECTION_MODULES,
        cache_dir=str(tmp_path / "c2"), s3_endpoint_url=endpoint, refresh_s=3600,
    )
    assert reader.names() == []
    writer.publish(haiku, "custom")
    assert reader.names() == []  # within refresh_s: the cached listing
    reader.backend.invalidate()
    assert reader.names() == ["custom"]


def test_flat_layout_objects_are_not_adapters(store, s3_bucket, haiku):
    endpoint, bucket = s3_bucket
    client = boto3.client("s3", endpoint_url=endpoint)
    for path in haiku.iterdir():  # someone copied a peft folder straight into the bucket
        client.upload_file(str(path), bucket, f"adapters/loose/{path.name}")
    assert store.names() == []


# ---- issue 12: names, quotas, streaming, base model on S3 -------------------------------


def _race(store, folder, owners, name="fresh"):
    barrier = threading.Barrier(len(owners))
    results, errors = [], []

    def upload(owner):
        barrier.wait()
        try:
            results.append(store.publish(folder, name, owner=owner))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=upload, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_tenants_racing_for_a_new_name_on_s3_exactly_one_wins(store, haiku, s3_bucket):
    """The claim is a conditional PUT (If-None-Match: *): two stores (two ingress
    processes) racing for one name, exactly one wins."""
    results, errors = _race(store, haiku, [f"tenant-{i}" for i in range(6)])
    assert len(results) == 1 and len(errors) == 5
    assert all(type(e) is NameTaken and e.owner == results[0].owner for e in errors)
    assert "adapters/.names/fresh.json" in _keys(s3_bucket)
    assert store.name_owner("fresh").owner == results[0].owner


def test_a_claimed_name_survives_deleting_every_version_on_s3(store, haiku):
    store.publish(haiku, "custom", owner="acme")
    store.delete("custom")
    with pytest.raises(NameTaken):
        store.publish(haiku, "custom", owner="beta")
    assert store.publish(haiku, "custom", owner="acme").version == "2"


def test_the_quota_holds_on_s3_across_two_processes_views(s3_bucket, base_info, tmp_path, haiku):
    """Two stores (say, two ingress replicas) share one tenant's quota through the bucket."""
    endpoint, bucket = s3_bucket

    def opened(cache):
        return open_store(f"s3://{bucket}/adapters", base=base_info, max_lora_rank=16,
                          allowed_target_modules=PROJECTION_MODULES, cache_dir=str(tmp_path / cache),
                          s3_endpoint_url=endpoint, refresh_s=3600, quota=TenantQuota(max_versions=2))

    first, second = opened("c1"), opened("c2")
    assert first.names() == []  # second's listing is now cached for an hour...
    second.names()
    first.publish(haiku, "a", owner="acme")
    second.publish(haiku, "b", owner="acme")  # ...but the quota check lists afresh
    with pytest.raises(QuotaExceeded, match="tenant_max_versions"):
        first.publish(haiku, "c", owner="acme")
    assert second.usage("acme").versions == 2
    second.delete("b")  # "b" stays acme's name (counting as one version): room for a version of it
    assert first.publish(haiku, "b", owner="acme").version == "2"


_MATERIALIZE_CHILD = """
import json, sys, tracemalloc
from adapters.store import open_store
from adapters.validation import PROJECTION_MODULES, base_model_info
uri, endpoint, base, cache = sys.argv[1:5]
store = open_store(uri, base=base_model_info(base, "lorafleet-tiny-llama"), max_lora_rank=16,
                   allowed_target_modules=PROJECTION_MODULES, cache_dir=cache, s3_endpoint_url=endpoint)
spec = store.resolve("big")
tracemalloc.start()
path = store.materialize(spec)
print(json.dumps({"path": path, "peak": tracemalloc.get_traced_memory()[1]}))
"""


def test_materialize_streams_an_s3_object_into_the_cache(store, s3_bucket, haiku, demo_assets, tmp_path):
    """Measured in a replica-like process of its own (moto's server runs inside the test
    process, so its memory would be traced here)."""
    import json
    import random
    import subprocess
    import sys

    from tests.conftest import REPO

    endpoint, bucket = s3_bucket
    folder = tmp_path / "big"
    shutil.copytree(haiku, folder)
    (folder / "extra.dat").write_bytes(random.Random(0).randbytes(24 * 1024 * 1024))
    store.publish(folder, "big")
    done = subprocess.run(
        [sys.executable, "-c", _MATERIALIZE_CHILD, f"s3://{bucket}/adapters", endpoint, str(demo_assets / "base"),
         str(tmp_path / "replica-cache")], cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (Path(result["path"]) / "extra.dat").read_bytes() == (folder / "extra.dat").read_bytes()
    assert result["peak"] < 12 * 1024 * 1024  # a whole-object read traces at least 24 MB


def test_iter_archive_of_an_s3_version_round_trips(store, haiku, tmp_path):
    store.publish(haiku, "custom")
    data = b"".join(store.iter_archive(store.resolve("custom")))
    out = tmp_path / "out"
    out.mkdir()
    root = extract_adapter_archive(io.BytesIO(data), out, ArchiveLimits(max_unpacked_bytes=1 << 26, max_files=16))
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in haiku.iterdir() if p.is_file())


def test_a_base_model_in_s3_checks_adapter_shapes(s3_bucket, demo_assets, tmp_path):
    """Module dims of an s3:// base: exact from the weights' headers (two ranged GETs per
    file, never the weights), or derived from config.json alone."""
    from adapters.validation import base_model_info, validate_adapter
    from tests.poison_adapters import widen_lora_a

    endpoint, bucket = s3_bucket
    client = boto3.client("s3", endpoint_url=endpoint)
    for path in (demo_assets / "base").iterdir():
        client.upload_file(str(path), bucket, f"models/tiny/{path.name}")
    client.upload_file(str(demo_assets / "base" / "config.json"), bucket, "models/config-only/config.json")
    poet = demo_assets / "adapters" / "poet"
    poison = widen_lora_a(poet, tmp_path / "poison")
    for prefix, dims_from in (("tiny", "safetensors headers + config.json"), ("config-only", "config.json")):
        base = base_model_info(f"s3://{bucket}/models/{prefix}", "lorafleet-tiny-llama", s3_endpoint_url=endpoint)
        assert base.dims_from == dims_from
        validate_adapter(poet, base=base, max_lora_rank=16)
        with pytest.raises(AdapterInvalid, match=r"expected \[16, 128\]"):
            validate_adapter(poison, base=base, max_lora_rank=16)
