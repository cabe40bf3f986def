"""One store, several served bases: each version is bound to its base, a name is one
adapter fleet-wide, and a base dropped from the config leaves its adapters in the store,
unservable with the reason."""

from __future__ import annotations

import shutil

import pytest

from adapters.errors import AdapterExists, AdapterInvalid
from adapters.store import LocalAdapterStore
from adapters.validation import ServedBase, base_model_info
from factory.demo_assets import BASE_NAME, SECOND_BASE_DIR, SECOND_BASE_NAME


@pytest.fixture(scope="module")
def wide_info(demo_assets):
    return base_model_info(str(demo_assets / SECOND_BASE_DIR), SECOND_BASE_NAME)


def _store(root, cache, *bases):
    return LocalAdapterStore(root, bases=tuple(ServedBase(b, 16) for b in bases), cache_dir=cache)


@pytest.fixture
def store(tmp_path, base_info, wide_info):
    return _store(tmp_path / "store", tmp_path / "cache", base_info, wide_info)


def test_each_published_version_is_bound_to_the_base_it_was_trained_on(store, demo_assets):
    store.publish(demo_assets / "adapters" / "haiku", "chat")
    store.publish(demo_assets / "adapters" / "wide-upper", "wide")
    assert (store.resolve("chat").base, store.resolve("wide").base) == (BASE_NAME, SECOND_BASE_NAME)


def test_a_new_version_for_another_base_is_refused_so_a_name_means_one_base(store, demo_assets):
    store.publish(demo_assets / "adapters" / "haiku", "shared-name")
    with pytest.raises(AdapterExists, match=f"adapter of base '{BASE_NAME}'.*for base '{SECOND_BASE_NAME}'") as err:
        store.publish(demo_assets / "adapters" / "wide-upper", "shared-name")
    assert err.value.param == "name"
    assert [e.version for e in store.versions("shared-name")] == ["1"]  # nothing written
    store.publish(demo_assets / "adapters" / "pirate", "shared-name")  # the same base: a new version
    assert store.resolve("shared-name").version == "2"


@pytest.mark.parametrize("name", [BASE_NAME, SECOND_BASE_NAME])
def test_every_bases_name_is_reserved(store, demo_assets, name):
    with pytest.raises(AdapterInvalid, match="base model's name"):
        store.publish(demo_assets / "adapters" / "haiku", name)


def test_a_base_removed_from_the_config_leaves_its_adapters_stored_but_unservable_with_the_reason(
        tmp_path, store, demo_assets, base_info):
    store.publish(demo_assets / "adapters" / "haiku", "chat")
    store.publish(demo_assets / "adapters" / "wide-upper", "wide")
    first_only = _store(tmp_path / "store", tmp_path / "cache2", base_info)  # the config now serves one base
    assert first_only.names() == ["chat", "wide"]
    (entry,) = first_only.versions("wide")
    assert entry.spec is None and SECOND_BASE_NAME in entry.error and BASE_NAME in entry.error
    with pytest.raises(AdapterInvalid, match=SECOND_BASE_NAME):
        first_only.resolve("wide")
    assert first_only.resolve("chat").base == BASE_NAME


def test_an_upload_for_no_served_base_is_refused_and_writes_nothing(store, demo_assets, tmp_path):
    folder = tmp_path / "other"
    shutil.copytree(demo_assets / "adapters" / "haiku", folder)
    config = folder / "adapter_config.json"
    config.write_text(config.read_text().replace(BASE_NAME, "meta-llama/Llama-3.1-8B"))
    with pytest.raises(AdapterInvalid, match=f"Llama-3.1-8B.*{BASE_NAME}.*{SECOND_BASE_NAME}"):
        store.publish(folder, "other")
    assert store.names() == []
