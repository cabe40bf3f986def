"""Who may see and use which adapter, and who may change it: table-driven."""

import pytest

from deployments.errors import PermissionDenied
from adapters.ownership import read_ownership
from deployments.tenancy.access import can_use, not_found, require_admin, require_admin_or_owner
from deployments.tenancy.keys import Principal
from adapters.store import StoreEntry

ADMIN = Principal("k-admin", "ops", "admin")
ACME = Principal("k-acme", "acme", "tenant")
BETA = Principal("k-beta", "beta", "tenant")


def _adapter(owner, visibility):
    return StoreEntry("x", None, None, owner=owner, visibility=visibility)


@pytest.mark.parametrize(
    "principal, owner, visibility, allowed",
    [
        (ACME, None, "public", True),  # demo adapters: flat folder, no manifest
        (ACME, "beta", "public", True),
        (ACME, "acme", "private", True),
        (ACME, "beta", "private", False),
        (ACME, None, "private", False),  # operator's private adapter
        (BETA, "acme", "private", False),
        (ADMIN, "beta", "private", True),
        (ADMIN, None, "private", True),
        (ACME, "acme", "unlisted", True),  # an unknown visibility is private: the owner only
        (BETA, "acme", "unlisted", False),
    ],
)
def test_can_use(principal, owner, visibility, allowed):
    assert can_use(principal, _adapter(owner, visibility)) is allowed


@pytest.mark.parametrize(
    "principal, owner, allowed",
    [(ADMIN, "acme", True), (ADMIN, None, True), (ACME, "acme", True), (ACME, "beta", False), (ACME, None, False)],
)
def test_registry_writes_need_admin_or_owner(principal, owner, allowed):
    if allowed:
        require_admin_or_owner(principal, owner)
    else:
        with pytest.raises(PermissionDenied):
            require_admin_or_owner(principal, owner)


def test_require_admin():
    require_admin(ADMIN)
    with pytest.raises(PermissionDenied):
        require_admin(ACME)


def test_hidden_and_missing_are_the_same_error():
    err = not_found("secret")
    assert err.message == "The model `secret` does not exist." and err.param == "model"


@pytest.mark.parametrize(
    "files, owner, visibility, problem",
    [
        ({}, None, "public", None),
        ({"lorafleet-manifest.json": '{"owner": "acme", "visibility": "private"}'}, "acme", "private", None),
        ({"manifest.json": '{"owner": "acme"}'}, "acme", "public", None),
        ({"lorafleet-manifest.json": '{"owner": "acme", "visibility": "private"}', "manifest.json": '{"visibility": "public"}'},
         "acme", "private", None),  # lorafleet-manifest.json wins
        ({"lorafleet-manifest.json": "{broken"}, None, "private", "not valid JSON"),
        ({"lorafleet-manifest.json": "[1]"}, None, "private", "JSON object"),
        ({"lorafleet-manifest.json": '{"owner": 7}'}, None, "private", "owner"),
        ({"lorafleet-manifest.json": '{"owner": "acme", "visibility": "secret"}'}, "acme", "private", "visibility"),
    ],
)
def test_read_ownership(tmp_path, files, owner, visibility, problem):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    ownership, error = read_ownership(tmp_path)
    assert (ownership.owner, ownership.visibility) == (owner, visibility)
    assert (error is None) if problem is None else (problem in error)
