"""The store reads owner and visibility; a hidden adapter fails exactly like a missing one."""

import json
import shutil

import pytest

from adapters.errors import AdapterInvalid, AdapterNotFound
from adapters.store import LocalAdapterStore
from deployments.tenancy.access import can_use
from deployments.tenancy.keys import Principal

ACME = Principal("k-acme", "acme", "tenant")
BETA = Principal("k-beta", "beta", "tenant")
ADMIN = Principal("k-ops", "ops", "admin")


@pytest.fixture
def store(tmp_path, demo_assets, base_info):
    root = tmp_path / "adapters"
    shutil.copytree(demo_assets / "adapters", root)
    (root / "poet" / "lorafleet-manifest.json").write_text(json.dumps({"owner": "acme", "visibility": "private"}))
    (root / "haiku" / "manifest.json").write_text(json.dumps({"owner": "acme", "visibility": "public"}))
    broken = root / "acme-broken"
    shutil.copytree(root / "poet", broken)
    (broken / "adapter_model.bin").write_bytes(b"pickle")
    return LocalAdapterStore(root, base=base_info, max_lora_rank=16)


def _visible(principal):
    return lambda entry: can_use(principal, entry)


def test_specs_carry_owner_and_visibility(store):
    poet, haiku = store.resolve("poet"), store.resolve("haiku")
    assert (poet.owner, poet.visibility) == ("acme", "private")
    assert (haiku.owner, haiku.visibility) == ("acme", "public")
    flat = next(s for s in store.list_valid() if s.name not in ("poet", "haiku"))
    assert (flat.owner, flat.visibility, flat.version) == (None, "public", "1")


def test_private_adapter_is_not_found_word_for_word_for_other_tenants(store):
    assert store.resolve("poet", _visible(ACME)).name == "poet"
    assert store.resolve("poet", _visible(ADMIN)).name == "poet"
    with pytest.raises(AdapterNotFound) as hidden:
        store.resolve("poet", _visible(BETA))
    with pytest.raises(AdapterNotFound) as missing:
        store.resolve("p0et", _visible(BETA))
    assert hidden.value.message.replace("poet", "X") == missing.value.message.replace("p0et", "X")
    assert hidden.value.param == missing.value.param == "model"


def test_an_invalid_private_adapter_does_not_leak_its_existence_either(store):
    with pytest.raises(AdapterNotFound):
        store.resolve("acme-broken", _visible(BETA))
    with pytest.raises(AdapterInvalid):
        store.resolve("acme-broken", _visible(ACME))  # its owner learns why it is refused


def test_a_broken_manifest_hides_the_adapter_and_refuses_it(store):
    (store.root / "haiku" / "manifest.json").write_text("{not json")
    entry = next(e for e in store.entries() if e.name == "haiku")
    assert entry.spec is None and "manifest.json" in entry.error and entry.visibility == "private"
    with pytest.raises(AdapterNotFound):
        store.resolve("haiku", _visible(ACME))
