"""API keys: hashing, the keys file (and its errors), lookup, reload and the CLI."""

import hashlib
import json

import pytest
import yaml

from deployments.errors import Unauthenticated
from deployments.tenancy.keys import (
    KeyLimits,
    KeyRing,
    KeysFileError,
    KeysFileWatcher,
    anonymous,
    bearer_token,
    hash_key,
    key_entry_yaml,
    new_key,
    parse_keys,
    read_keys_file,
)

HASH_A = hash_key("key-a")
HASH_B = hash_key("key-b")


def _file(*entries) -> dict:
    return {"keys": list(entries)}


def test_hash_is_sha256_hex_and_new_keys_are_random_and_long():
    assert hash_key("abc") == hashlib.sha256(b"abc").hexdigest()
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(k.startswith("lf-") and len(k) >= 40 for k in keys)


@pytest.mark.parametrize(
    "header, key",
    [
        ("Bearer lf-abc", "lf-abc"),
        ("bearer   lf-abc ", "lf-abc"),
        ("Basic bGY6YWJj", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header, key):
    assert bearer_token(header) == key


def test_ring_authenticates_by_hash_with_limits_and_defaults():
    keys = parse_keys(_file(
        {"tenant": "acme", "role": "tenant", "sha256": HASH_A, "limits": {"requests_per_second": 2}},
        {"id": "ops", "tenant": "ops", "role": "admin", "sha256": HASH_B},
    ))
    ring = KeyRing(keys, KeyLimits(requests_per_second=10, tokens_per_minute=1000))
    a = ring.authenticate("key-a")
    assert (a.tenant, a.role, a.is_admin) == ("acme", "tenant", False)
    assert a.key_id == "key-" + HASH_A[:12]
    assert (a.requests_per_second, a.tokens_per_minute) == (2, 1000)  # own rps, default tpm
    b = ring.authenticate("key-b")
    assert (b.key_id, b.is_admin, b.requests_per_second) == ("ops", True, 10)


@pytest.mark.parametrize("key", [None, "", "key-c", "KEY-A", "key-a ", HASH_A])
def test_missing_or_wrong_keys_are_unauthenticated(key):
    ring = KeyRing(parse_keys(_file({"tenant": "acme", "role": "tenant", "sha256": HASH_A})))
    with pytest.raises(Unauthenticated):
        ring.authenticate(key)


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"keys": [{"tenant": "acme", "role": "tenant"}]}, "keys.0.sha256"),
        ({"keys": [{"tenant": "acme", "role": "tenant", "sha256": "abc"}]}, "keys.0.sha256"),
        ({"keys": [{"tenant": "acme", "role": "tenant", "sha256": HASH_A.upper()}]}, "keys.0.sha256"),
        ({"keys": [{"tenant": "acme", "role": "root", "sha256": HASH_A}]}, "keys.0.role"),
        ({"keys": [{"tenant": "../x", "role": "tenant", "sha256": HASH_A}]}, "keys.0.tenant"),
        ({"keys": [{"tenant": "acme", "role": "tenant", "sha256": HASH_A, "key": "lf-plain"}]}, "keys.0.key"),
        ({"keys": [{"tenant": "a", "role": "tenant", "sha256": HASH_A, "limits": {"requests_per_second": 0}}]},
         "keys.0.limits.requests_per_second"),
        ({"keys": [{"tenant": "a", "role": "tenant", "sha256": HASH_A}, {"tenant": "b", "role": "tenant", "sha256": HASH_A}]},
         "duplicate key sha256"),
        ({"keys": [{"id": "x", "tenant": "a", "role": "tenant", "sha256": HASH_A}, {"id": "x", "tenant": "b", "role": "tenant", "sha256": HASH_B}]},
         "duplicate key id"),
        ({"tokens": []}, "tokens"),
        ([1, 2], "(root)"),
    ],
)
def test_bad_keys_files_name_the_entry_and_field(data, fragment):
    with pytest.raises(KeysFileError) as err:
        parse_keys(data, "keys.yaml")
    assert fragment in str(err.value) and "keys.yaml" in str(err.value)


def test_empty_file_means_no_keys_and_nobody_gets_in(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("")
    ring = KeyRing(read_keys_file(path))
    with pytest.raises(Unauthenticated):
        ring.authenticate("anything")


def test_keys_file_may_be_json_and_unreadable_files_are_errors(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(_file({"tenant": "acme", "role": "tenant", "sha256": HASH_A})))
    assert KeyRing(read_keys_file(path)).authenticate("key-a").tenant == "acme"
    with pytest.raises(KeysFileError, match="not found"):
        read_keys_file(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("keys: [unclosed")
    with pytest.raises(KeysFileError, match="not valid YAML"):
        read_keys_file(tmp_path / "bad.yaml")


def test_watcher_reloads_changed_file_and_keeps_old_keys_on_a_bad_rewrite(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump(_file({"tenant": "acme", "role": "tenant", "sha256": HASH_A})))
    now = [0.0]
    watcher = KeysFileWatcher(path, check_period_s=1.0, clock=lambda: now[0])
    assert watcher.authenticate("key-a").tenant == "acme"

    path.write_text(yaml.safe_dump(_file({"tenant": "beta", "role": "tenant", "sha256": HASH_B})))
    now[0] = 0.5  # within the check period: not looked at yet
    assert watcher.authenticate("key-a").tenant == "acme"
    now[0] = 2.0
    assert watcher.authenticate("key-b").tenant == "beta"
    with pytest.raises(Unauthenticated):
        watcher.authenticate("key-a")  # revoked by the rewrite

    path.write_text("keys: [{tenant: x}]  # broken")
    now[0] = 4.0
    assert watcher.authenticate("key-b").tenant == "beta"  # last good keys kept


def test_watcher_refuses_to_start_on_a_bad_file(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("keys: 3")
    with pytest.raises(KeysFileError):
        KeysFileWatcher(path)


def test_anonymous_is_an_admin_under_the_default_limits():
    p = anonymous(KeyLimits(requests_per_second=3))
    assert p.is_admin and p.requests_per_second == 3 and p.tokens_per_minute is None


def test_created_entry_holds_only_the_hash_and_authenticates_the_key():
    key = new_key()
    text = key_entry_yaml(key, "acme", "tenant", "acme-ci")
    assert key not in text
    ring = KeyRing(parse_keys(yaml.safe_load(text)))
    p = ring.authenticate(key)
    assert (p.key_id, p.tenant, p.role) == ("acme-ci", "acme", "tenant")
    with pytest.raises(KeysFileError, match="tenant"):
        key_entry_yaml(key, "bad name", "tenant")


def test_cli_keys_create_prints_a_key_once_and_its_entry(capsys):
    from deployments.cli import main

    assert main(["keys", "create", "--tenant", "acme", "--role", "admin"]) == 0
    out = capsys.readouterr().out
    key = next(w for w in out.split() if w.startswith("lf-"))
    entry = yaml.safe_load(out[out.index("keys:"):])
    assert out.count(key) == 1
    p = KeyRing(parse_keys(entry)).authenticate(key)
    assert (p.tenant, p.role) == ("acme", "admin")
