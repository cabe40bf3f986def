"""The node-local adapter cache and the store's streaming reads.

Before: the cache (`adapters.cache_dir`) grew with every version ever loaded, a version
was read from the store into memory whole (`read_file`) by `materialize` and `pull`,
and the store's per-version cache of parsed manifests grew with every version seen.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import shutil
import tarfile
import tracemalloc

import pytest

from adapters.archive import ArchiveLimits, extract_adapter_archive
from adapters.errors import AdapterInvalid, AdapterLoadError
from adapters.store import LocalAdapterStore

MB = 1024 * 1024


@pytest.fixture
def adapters(demo_assets):
    return [demo_assets / "adapters" / n for n in ("haiku", "pirate", "poet", "translator")]


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _store(tmp_path, base_info, cache_max_bytes=None, **kwargs) -> LocalAdapterStore:
    return LocalAdapterStore(tmp_path / "store", base=base_info, max_lora_rank=16, cache_dir=tmp_path / "cache",
                             cache_max_bytes=cache_max_bytes, **kwargs)


def _cached(store) -> set[str]:
    return {p.name for p in store.cache_dir.iterdir() if not p.name.startswith(".")}


def _published(store, adapters) -> list:
    specs = []
    for i, folder in enumerate(adapters):
        store.publish(folder, f"a{i}")
        specs.append(store.resolve(f"a{i}"))
    return specs


def test_cache_is_collected_to_its_cap_least_recently_used_first(tmp_path, base_info, adapters):
    cap = sum(_size(f) for f in adapters[1:]) + 1024  # room for three of the four
    store = _store(tmp_path, base_info, cache_max_bytes=cap)
    specs = _published(store, adapters)
    for spec in specs[:3]:
        store.materialize(spec)
    store.materialize(specs[0])  # used again: now specs[1] is the least recent
    os.utime(store.cache_dir / ".locks" / f"{specs[0].fingerprint}.lock")
    store.materialize(specs[3])
    assert _cached(store) == {specs[0].fingerprint, specs[2].fingerprint, specs[3].fingerprint}
    assert sum(_size(store.cache_dir / f) for f in _cached(store)) <= cap


def test_a_pinned_version_is_never_collected_and_goes_once_released(tmp_path, base_info, adapters):
    store = _store(tmp_path, base_info, cache_max_bytes=1)  # every version is over the cap
    specs = _published(store, adapters)
    pin = store.pin(specs[0])
    for spec in specs[1:]:
        store.materialize(spec)
    assert specs[0].fingerprint in _cached(store)  # in use all along
    assert (pin.path / "adapter_model.safetensors").is_file()
    pin.release()
    report = store.collect_cache()
    assert _cached(store) == set() and not report.pinned_over_cap


def _hold_pin(cache_dir, fingerprint, pinned, done):
    from adapters.cache import AdapterCache

    with AdapterCache(cache_dir).pin(fingerprint):
        pinned.set()
        done.wait(30)


def test_a_version_pinned_by_another_process_on_the_node_is_not_collected(tmp_path, base_info, adapters):
    """Replicas on one node share the cache: a pin is a flock, seen by every process."""
    store = _store(tmp_path, base_info, cache_max_bytes=1)
    spec = _published(store, adapters[:1])[0]
    store.materialize(spec)
    ctx = multiprocessing.get_context("fork")
    pinned, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_pin, args=(store.cache_dir, spec.fingerprint, pinned, done))
    child.start()
    try:
        assert pinned.wait(30)
        report = store.collect_cache()
        assert spec.fingerprint in _cached(store) and report.pinned_over_cap
    finally:
        done.set()
        child.join(30)
    assert store.collect_cache().removed == (spec.fingerprint,)


def test_a_killed_pin_holder_pins_nothing(tmp_path, base_info, adapters):
    store = _store(tmp_path, base_info, cache_max_bytes=1)
    spec = _published(store, adapters[:1])[0]
    store.materialize(spec)
    ctx = multiprocessing.get_context("fork")
    pinned, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_pin, args=(store.cache_dir, spec.fingerprint, pinned, done))
    child.start()
    assert pinned.wait(30)
    child.kill()
    child.join(30)
    assert store.collect_cache().removed == (spec.fingerprint,)


@pytest.fixture
def big_adapter(tmp_path, demo_assets):
    """haiku plus a 48 MB extra file (a README-sized folder would not show whole-file reads)."""
    folder = tmp_path / "big"
    shutil.copytree(demo_assets / "adapters" / "haiku", folder)
    (folder / "extra.dat").write_bytes(random.Random(0).randbytes(48 * MB))
    return folder


def _traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_materialize_and_pull_stream_files_instead_of_holding_them(tmp_path, base_info, big_adapter):
    store = _store(tmp_path, base_info)
    store.publish(big_adapter, "big")
    spec = store.resolve("big")
    assert _traced_peak(lambda: store.materialize(spec)) < 8 * MB
    archive = tmp_path / "pulled.tar.gz"

    def pull():
        with archive.open("wb") as out:
            for chunk in store.iter_archive(spec):
                out.write(chunk)

    assert _traced_peak(pull) < 8 * MB
    out = tmp_path / "out"
    out.mkdir()
    with archive.open("rb") as f:
        root = extract_adapter_archive(f, out, ArchiveLimits(max_unpacked_bytes=64 * MB, max_files=8))
    assert (root / "extra.dat").read_bytes() == (big_adapter / "extra.dat").read_bytes()


def test_a_corrupted_file_cuts_the_streamed_archive_so_it_never_unpacks(tmp_path, base_info, big_adapter):
    store = _store(tmp_path, base_info)
    store.publish(big_adapter, "big")
    spec = store.resolve("big")
    stored = tmp_path / "store" / "big" / "1" / "files" / "extra.dat"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    received = bytearray()
    with pytest.raises(AdapterLoadError, match="corrupted"):
        for chunk in store.iter_archive(spec):
            received += chunk
    assert len(received) > MB  # streaming had begun
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AdapterInvalid, match="not a valid tar.gz"):
        extract_adapter_archive(io.BytesIO(bytes(received)), out, ArchiveLimits(max_unpacked_bytes=64 * MB, max_files=8))


def test_iter_archive_of_a_legacy_folder_holds_its_files(tmp_path, base_info, demo_assets):
    shutil.copytree(demo_assets / "adapters" / "poet", tmp_path / "store" / "poet")
    store = _store(tmp_path, base_info)
    data = b"".join(store.iter_archive(store.resolve("poet")))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == sorted(p.name for p in (demo_assets / "adapters" / "poet").iterdir() if p.is_file())


def test_the_cache_of_parsed_manifests_is_bounded(tmp_path, base_info, demo_assets):
    store = _store(tmp_path, base_info, max_cached_entries=3)
    for _ in range(6):
        store.publish(demo_assets / "adapters" / "haiku", "custom")
    assert [e.version for e in store.versions("custom")] == ["1", "2", "3", "4", "5", "6"]
    assert len(store._cache) == 3
    assert store.resolve("custom@1").version == "1"  # an evicted entry is simply read again
