"""Who may see, use and change which adapter: pure rules, no I/O.

An adapter has an `owner` (a tenant name, or None for adapters placed in the store
by its operator) and a `visibility`: `public` (every key may list and use it) or
`private` (its owner's keys and admins only). Anything else someone might write in a
manifest is treated as private, so a typo never publishes an adapter.

A private adapter the caller may not use must look exactly like one that does not
exist: the ingress answers the same 404 with the same message (`not_found`).
"""

from __future__ import annotations

from typing import Protocol

from adapters.errors import AdapterNotFound
from deployments.errors import PermissionDenied
from deployments.tenancy.keys import Principal

PUBLIC = "public"
PRIVATE = "private"
VISIBILITIES = (PUBLIC, PRIVATE)


class Owned(Protocol):
    owner: str | None
    visibility: str


def can_use(principal: Principal, adapter: Owned) -> bool:
    """May `principal` list and call `adapter`? Admins: all; tenants: public ones and their own."""
    if principal.is_admin or adapter.visibility == PUBLIC:
        return True
    return adapter.owner is not None and adapter.owner == principal.tenant


def not_found(name: str) -> AdapterNotFound:
    """The one error for a missing model and a hidden one (same text, no existence leak)."""
    return AdapterNotFound(f"The model `{name}` does not exist.", param="model")


def require_admin(principal: Principal, action: str = "this") -> None:
    if not principal.is_admin:
        raise PermissionDenied(f"Only an admin key may do {action}.")


def require_admin_or_owner(principal: Principal, owner: str | None, action: str = "this") -> None:
    """Registry writes (upload, replace, delete): an admin, or a key of the owning tenant.
    An adapter without an owner belongs to the operator: admins only."""
    if principal.is_admin or (owner is not None and owner == principal.tenant):
        return
    raise PermissionDenied(f"Only the adapter's owner or an admin may do {action}.")
