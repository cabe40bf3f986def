"""Names and versions in the store (local directory; S3 in tests/integration/test_store_s3.py):
a version number is never reused, a new name goes to exactly one of the tenants racing
for it, and the loser gets the same error whoever owns the name and however it is seen.

Before: deleting the newest local version let the next upload take its number (a
client pinned to `custom@2` silently got other weights), and two tenants uploading
onto one new name both succeeded (as versions 1 and 2 with different owners).
"""

from __future__ import annotations

import shutil
import threading

import pytest

from adapters.errors import AdapterExists, NameTaken
from deployments.api.http_errors import to_http_error
from adapters.store import LocalAdapterStore


@pytest.fixture
def store(tmp_path, demo_assets, base_info):
    root = tmp_path / "store"
    shutil.copytree(demo_assets / "adapters" / "poet", root / "poet")  # a legacy flat adapter, the operator's
    return LocalAdapterStore(root, base=base_info, max_lora_rank=16, cache_dir=tmp_path / "cache")


@pytest.fixture
def haiku(demo_assets):
    return demo_assets / "adapters" / "haiku"


@pytest.fixture
def pirate(demo_assets):
    return demo_assets / "adapters" / "pirate"


def test_deleting_the_newest_version_never_lets_the_next_upload_take_its_number(store, haiku, pirate):
    store.publish(haiku, "custom")
    old = store.publish(haiku, "custom")
    assert store.delete("custom@2") == ["custom@2"]
    new = store.publish(pirate, "custom")
    assert new.version == "3"
    assert store.resolve("custom@3").fingerprint == new.fingerprint != old.fingerprint
    assert [e.version for e in store.versions("custom")] == ["1", "3"]


def test_a_deleted_version_number_cannot_be_published_again_explicitly(store, haiku, pirate):
    store.publish(haiku, "custom", version="2")
    store.delete("custom@2")
    with pytest.raises(AdapterExists):
        store.publish(pirate, "custom", version="2")
    store.delete("poet")
    with pytest.raises(AdapterExists):
        store.publish(pirate, "poet", version="1")


def test_deleting_every_version_keeps_the_numbers_burnt(store, haiku):
    for _ in range(3):
        store.publish(haiku, "custom")
    store.delete("custom")
    assert store.versions("custom") == [] and "custom" not in store.names()
    assert store.publish(haiku, "custom").version == "4"


def test_deleting_a_legacy_flat_adapter_burns_version_1(store, haiku):
    assert store.delete("poet") == ["poet@1"]
    assert store.publish(haiku, "poet").version == "2"


def _race(store, folder, owners: list[str | None], name: str = "fresh"):
    """Every owner publishes `name` at the same moment; returns (manifests, errors)."""
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


def test_tenants_racing_for_a_new_name_exactly_one_wins(store, haiku):
    owners = [f"tenant-{i}" for i in range(8)]
    results, errors = _race(store, haiku, owners)
    assert len(results) == 1, [m.owner for m in results]
    winner = results[0].owner
    assert len(errors) == 7 and all(type(e) is NameTaken and e.owner == winner for e in errors)
    assert store.name_owner("fresh").owner == winner
    assert {e.owner for e in store.versions("fresh")} == {winner}


def test_the_loser_gets_the_same_error_for_a_private_and_a_public_owner(store, haiku):
    store.publish(haiku, "secret", owner="acme", visibility="private")
    store.publish(haiku, "open", owner="acme", visibility="public")
    answers = []
    for name in ("secret", "open"):
        with pytest.raises(NameTaken) as err:
            store.publish(haiku, name, owner="beta")
        assert to_http_error(err.value).status == 403 and err.value.owner == "acme"
        answers.append((type(err.value), err.value.message.replace(name, "X"), err.value.param))
        assert "acme" not in err.value.message  # the owner is for the API's decision, never shown
    assert answers[0] == answers[1]
    assert store.name_owner("secret").owner == store.name_owner("open").owner == "acme"
    assert store.name_owner("nobody") is None


def test_a_name_stays_its_owners_after_every_version_is_deleted_until_released(store, haiku):
    store.publish(haiku, "custom", owner="acme")
    store.delete("custom")
    with pytest.raises(NameTaken):
        store.publish(haiku, "custom", owner="beta")
    assert store.publish(haiku, "custom", owner="acme").version == "2"
    with pytest.raises(AdapterExists, match="still has versions"):
        store.release_name("custom")
    store.delete("custom")
    assert store.release_name("custom") is True
    assert store.name_owner("custom") is None
    taken = store.publish(haiku, "custom", owner="beta")
    assert (taken.owner, taken.version) == ("beta", "3")  # a new owner, never an old number


def test_a_name_published_before_claims_existed_keeps_its_latest_owner(store, haiku):
    """poet is a legacy folder with no owner (the operator's): a tenant cannot take it,
    the operator's next upload records the claim."""
    assert store.name_owner("poet").owner is None and not store.name_owner("poet").recorded
    with pytest.raises(NameTaken) as err:
        store.publish(haiku, "poet", owner="acme")
    assert err.value.owner is None
    assert store.publish(haiku, "poet").version == "2"
    assert store.name_owner("poet").recorded


def test_an_admin_publishing_under_a_tenants_name_keeps_the_tenant_as_owner(store, haiku):
    store.publish(haiku, "custom", owner="acme")
    with pytest.raises(NameTaken):
        store.publish(haiku, "custom", owner=None)  # the API passes the name's owner for admins
    assert store.publish(haiku, "custom", owner=store.name_owner("custom").owner).owner == "acme"
