"""Per-tenant storage quotas on the registry (local directory; S3 in
tests/integration/test_store_s3.py). Before: no quota, a tenant could fill the store.

The concurrency guarantee (adapters/quota.py) is tested under the interleaving that
would break a check-then-commit quota: every upload checks before any commits.
"""

from __future__ import annotations

import threading

import pytest

from adapters.errors import QuotaExceeded
from deployments.api.http_errors import to_http_error
from adapters.quota import TenantQuota, owner_key
from adapters.store import AdapterStore, LocalAdapterStore
from adapters.store_local import LocalBackend


@pytest.fixture
def haiku(demo_assets):
    return demo_assets / "adapters" / "haiku"


@pytest.fixture
def size(haiku):
    return sum(p.stat().st_size for p in haiku.iterdir() if p.is_file())


def _store(tmp_path, base_info, **quota) -> LocalAdapterStore:
    return LocalAdapterStore(tmp_path / "store", base=base_info, max_lora_rank=16, cache_dir=tmp_path / "cache",
                             quota=TenantQuota(**quota))


def test_an_upload_past_the_versions_quota_is_refused_with_403_naming_the_limit(tmp_path, base_info, haiku):
    store = _store(tmp_path, base_info, max_versions=2)
    store.publish(haiku, "a", owner="acme")
    store.publish(haiku, "a", owner="acme")
    with pytest.raises(QuotaExceeded) as err:
        store.publish(haiku, "b", owner="acme")
    assert to_http_error(err.value).status == 403
    assert (err.value.limit, err.value.used, err.value.maximum) == ("versions", 2, 2)
    assert "adapters.tenant_max_versions" in err.value.message
    assert store.names() == ["a"]
    store.publish(haiku, "c", owner="beta")  # another tenant's quota is its own
    store.publish(haiku, "d", owner=None)  # the operator's adapters count against nobody


def test_an_upload_past_the_bytes_quota_is_refused_and_deleting_frees_room(tmp_path, base_info, haiku, size):
    store = _store(tmp_path, base_info, max_bytes=size * 2 + size // 2)
    store.publish(haiku, "a", owner="acme")
    store.publish(haiku, "b", owner="acme")
    with pytest.raises(QuotaExceeded, match="adapters.tenant_max_bytes") as err:
        store.publish(haiku, "c", owner="acme")
    assert (err.value.limit, err.value.used) == ("bytes", 2 * size)
    store.delete("b")
    assert store.usage("acme").bytes == size
    store.publish(haiku, "a", owner="acme")


def test_a_claimed_name_with_no_version_left_counts_as_one_version(tmp_path, base_info, haiku):
    """Names outlive their versions (they stay their owner's): without this, a tenant could
    hold any number of names by publishing and deleting."""
    store = _store(tmp_path, base_info, max_versions=1)
    store.publish(haiku, "a", owner="acme")
    store.delete("a")
    assert store.usage("acme").versions == 1 and store.usage("acme").empty_names == {"a"}
    with pytest.raises(QuotaExceeded):
        store.publish(haiku, "b", owner="acme")
    assert store.publish(haiku, "a", owner="acme").version == "2"  # its own empty name: room for it


class _CheckTogether(LocalBackend):
    """No upload gets past its quota check until every upload has made it (the last read of
    the check waits for the others): the interleaving under which a check-then-commit
    quota lets every upload through."""

    def __init__(self, root, uploads: int):
        super().__init__(root)
        self.barrier = threading.Barrier(uploads)

    def owned_names(self, owner_key):
        self.barrier.wait(timeout=30)
        return super().owned_names(owner_key)


def _concurrent(store, folder, names) -> tuple[list, list]:
    results, errors = [], []

    def upload(name):
        try:
            results.append(store.publish(folder, name, owner="acme"))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=upload, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_uploads_cannot_both_squeeze_past_the_quota(tmp_path, base_info, haiku):
    names = ["a", "b", "c", "d"]
    backend = _CheckTogether(tmp_path / "store", uploads=1)
    store = AdapterStore(backend, base=base_info, max_lora_rank=16, cache_dir=tmp_path / "cache",
                         quota=TenantQuota(max_versions=2))
    store.publish(haiku, "first", owner="acme")  # one version of room left
    backend.barrier = threading.Barrier(len(names))
    results, errors = _concurrent(store, haiku, names)
    assert len(results) <= 1 and len(results) + len(errors) == 4  # room for one: never more
    assert all(isinstance(e, QuotaExceeded) for e in errors), errors
    backend.barrier = threading.Barrier(1)
    assert store.usage("acme").versions <= 2
    assert list((tmp_path / "store" / ".reservations").rglob("*.json")) == []  # all released


def test_concurrent_uploads_within_the_quota_all_pass(tmp_path, base_info, haiku):
    store = _store(tmp_path, base_info, max_versions=10)
    results, errors = _concurrent(store, haiku, ["a", "b", "c", "d"])
    assert errors == [] and len(results) == 4 and store.usage("acme").versions == 4


def test_an_upload_that_died_mid_way_holds_its_reservation_only_until_it_expires(tmp_path, base_info, haiku):
    store = _store(tmp_path, base_info, max_versions=1, reservation_ttl_s=3600)
    store.backend.add_reservation(owner_key("acme"), "dead", b"{}")  # its process was killed
    with pytest.raises(QuotaExceeded):
        store.publish(haiku, "a", owner="acme")
    expired = _store(tmp_path, base_info, max_versions=1, reservation_ttl_s=0)
    assert expired.publish(haiku, "a", owner="acme").version == "1"
    assert list((tmp_path / "store" / ".reservations").rglob("*.json")) == []  # swept


def test_a_refused_upload_claims_no_name(tmp_path, base_info, haiku):
    store = _store(tmp_path, base_info, max_versions=1)
    store.publish(haiku, "a", owner="acme")
    with pytest.raises(QuotaExceeded):
        store.publish(haiku, "b", owner="acme")
    assert store.name_owner("b") is None
