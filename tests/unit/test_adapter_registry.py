"""The adapter store's publishing rules on a local directory: manifests, atomic
versions, integrity checks when a replica loads, and version resolution."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import threading
import time

import pytest

from adapters.errors import AdapterExists, AdapterInvalid, AdapterLoadError, AdapterNotFound
from adapters.manifest import MANIFEST_NAME, Manifest, split_model_id
from adapters.store import LocalAdapterStore
from adapters.store_local import LocalBackend


@pytest.fixture
def store(tmp_path, demo_assets, base_info):
    root = tmp_path / "store"
    shutil.copytree(demo_assets / "adapters" / "poet", root / "poet")  # a legacy flat adapter
    return LocalAdapterStore(root, base=base_info, max_lora_rank=16, cache_dir=tmp_path / "cache")


@pytest.fixture
def haiku(demo_assets):
    return demo_assets / "adapters" / "haiku"


def test_published_version_has_a_manifest_that_lists_every_file(store, haiku):
    manifest = store.publish(haiku, "custom", owner="team-a", visibility="private")
    assert (manifest.name, manifest.version, manifest.owner, manifest.visibility, manifest.source) == (
        "custom", "1", "team-a", "private", "upload")
    stored = Manifest.from_json((store.root / "custom" / "1" / MANIFEST_NAME).read_bytes())
    assert stored == manifest
    assert set(stored.files) == {p.name for p in haiku.iterdir() if p.is_file()}
    assert stored.base_model and stored.rank > 0 and stored.target_modules
    spec = store.resolve("custom")
    assert (spec.version, spec.owner, spec.visibility, spec.served_id) == ("1", "team-a", "private", "custom@1")


def test_versions_resolve_by_number_and_name_means_latest(store, haiku, demo_assets):
    store.publish(haiku, "custom")
    store.publish(demo_assets / "adapters" / "pirate", "custom")
    assert [e.version for e in store.versions("custom")] == ["1", "2"]
    assert store.resolve("custom").version == "2"
    assert store.resolve("custom@1").fingerprint != store.resolve("custom@2").fingerprint
    assert store.resolve("custom@1").served_id != store.resolve("custom@2").served_id
    with pytest.raises(AdapterNotFound):
        store.resolve("custom@3")
    with pytest.raises(AdapterNotFound):
        store.resolve("custom@latest")


def test_legacy_flat_folder_is_version_1_and_uploads_continue_at_2(store, haiku):
    legacy = store.resolve("poet")
    assert (legacy.version, legacy.owner, legacy.visibility, legacy.served_id) == ("1", None, "public", "poet")
    assert store.resolve("poet@1") == legacy
    with pytest.raises(AdapterExists):
        store.publish(haiku, "poet", version="1")
    assert store.publish(haiku, "poet").version == "2"
    assert store.resolve("poet").served_id == "poet@2"
    assert store.resolve("poet@1").served_id == "poet"


def test_an_existing_version_is_never_overwritten(store, haiku, demo_assets):
    store.publish(haiku, "custom", version="5")
    before = (store.root / "custom" / "5" / MANIFEST_NAME).read_bytes()
    with pytest.raises(AdapterExists):
        store.publish(demo_assets / "adapters" / "pirate", "custom", version="5")
    assert (store.root / "custom" / "5" / MANIFEST_NAME).read_bytes() == before
    assert store.publish(haiku, "custom").version == "6"


def _publish_then_die_before_the_manifest(store, folder):
    """Child process: the power goes out right after the weights are on disk."""
    LocalBackend._write_manifest = lambda self, staging, manifest: os._exit(17)
    store.publish(folder, "custom")


def test_crash_between_weights_and_manifest_leaves_nothing_visible(store, haiku):
    child = multiprocessing.get_context("fork").Process(target=_publish_then_die_before_the_manifest, args=(store, haiku))
    child.start()
    child.join(60)
    assert child.exitcode == 17
    staging = store.root / ".staging"
    leftovers = list(staging.iterdir())
    assert len(leftovers) == 1 and (leftovers[0] / "files" / "adapter_model.safetensors").exists()  # weights written
    assert store.names() == ["poet"]
    with pytest.raises(AdapterNotFound):
        store.resolve("custom")
    os.utime(leftovers[0], (time.time() - 7200, time.time() - 7200))  # an hour later
    assert store.publish(haiku, "custom").version == "1"
    assert list(staging.iterdir()) == []  # the crash's leftovers are swept


def test_a_version_folder_without_manifest_is_invisible(store, haiku):
    half = store.root / "custom" / "1" / "files"
    shutil.copytree(haiku, half)  # weights written, manifest never came
    assert store.versions("custom") == []
    assert "custom" not in {s.name for s in store.list_valid()}
    with pytest.raises(AdapterNotFound):
        store.resolve("custom@1")
    assert store.publish(haiku, "custom").version == "2"  # the burnt number is skipped


def test_replica_copy_is_verified_and_a_corrupted_file_is_refused(store, haiku):
    store.publish(haiku, "custom")
    spec = store.resolve("custom")
    local = store.materialize(spec)
    assert local.startswith(str(store.cache_dir)) and spec.fingerprint in local
    weights = store.root / "custom" / "1" / "files" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    shutil.rmtree(store.cache_dir)
    with pytest.raises(AdapterLoadError) as err:
        store.materialize(spec)
    assert "corrupted" in err.value.message and "adapter_model.safetensors" in err.value.message
    assert not err.value.retriable
    assert not any(p.name == spec.fingerprint for p in store.cache_dir.iterdir())


def test_a_tampered_cache_copy_is_fetched_again(store, haiku):
    store.publish(haiku, "custom")
    spec = store.resolve("custom")
    local = store.materialize(spec)
    (store.cache_dir / spec.fingerprint / "adapter_config.json").write_text("{}")
    assert store.materialize(spec) == local
    assert json.loads((store.cache_dir / spec.fingerprint / "adapter_config.json").read_text()).get("peft_type")


def test_a_missing_file_in_the_store_is_refused(store, haiku):
    store.publish(haiku, "custom")
    spec = store.resolve("custom")
    (store.root / "custom" / "1" / "files" / "adapter_config.json").unlink()
    with pytest.raises(AdapterLoadError, match="incomplete"):
        store.materialize(spec)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"base_model_name_or_path": "someone/else"}, "base model"),
        ({"r": 64}, "rank 64 exceeds"),
        ({"target_modules": ["q_proj", "mlp_fc9"]}, "do not exist in the base model"),
    ],
)
def test_invalid_adapters_are_refused_before_anything_is_written(store, haiku, tmp_path, change, message):
    bad = tmp_path / "bad"
    shutil.copytree(haiku, bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    config.update(change)
    (bad / "adapter_config.json").write_text(json.dumps(config))
    before = sorted(p.relative_to(store.root) for p in store.root.rglob("*"))
    with pytest.raises(AdapterInvalid, match=message):
        store.publish(bad, "custom")
    assert sorted(p.relative_to(store.root) for p in store.root.rglob("*")) == before


def test_the_base_model_name_is_not_an_adapter_name(store, haiku):
    from factory.demo_assets import BASE_NAME

    with pytest.raises(AdapterInvalid, match="base model"):
        store.publish(haiku, BASE_NAME)
    assert store.names() == ["poet"]


def test_delete_one_version_or_all(store, haiku):
    store.publish(haiku, "custom")
    store.publish(haiku, "custom")
    assert store.delete("custom@1") == ["custom@1"]
    assert store.resolve("custom").version == "2"
    with pytest.raises(AdapterNotFound):
        store.resolve("custom@1")
    assert store.delete("custom") == ["custom@2"]
    with pytest.raises(AdapterNotFound):
        store.resolve("custom")
    assert store.delete("poet") == ["poet@1"]
    assert store.names() == []
    with pytest.raises(AdapterNotFound):
        store.delete("poet")


def test_concurrent_uploads_of_one_name_get_distinct_versions(store, haiku, demo_assets):
    sources = [haiku, demo_assets / "adapters" / "pirate"] * 3
    results, errors = [], []

    def upload(folder):
        try:
            results.append(store.publish(folder, "custom"))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=upload, args=(f,)) for f in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(int(m.version) for m in results) == [1, 2, 3, 4, 5, 6]
    for m in results:  # every version holds exactly the files its manifest vouches for
        spec = store.resolve(f"custom@{m.version}")
        assert spec.fingerprint == m.fingerprint
        store.materialize(spec)


def test_split_model_id():
    assert split_model_id("poet") == ("poet", None)
    assert split_model_id("poet@3") == ("poet", "3")


@pytest.mark.parametrize(
    "err",
    [
        AdapterLoadError("corrupted", retriable=False, param="model"),
        AdapterExists("taken", param="version"),
        AdapterNotFound("gone", param="model"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling_with_every_field(err):
    """An engine replica's error reaches the ingress through Ray's pickling; a lost
    type would turn a clear message into a generic 500."""
    import pickle

    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err) and copy.__dict__ == err.__dict__ and str(copy) == str(err)
