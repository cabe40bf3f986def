"""`model` names -> the base model or an adapter version, and the /v1/models cards.

A tenant sees (and may call) public adapters and its own; any other adapter does not
exist for it, word for word (`deployments.tenancy.access`). Every lookup reads the
store (a few `stat`s locally, a cached listing on S3), so callers run these functions
off the event loop.
"""

from __future__ import annotations

from adapters.errors import AdapterInvalid
from adapters.manifest import split_model_id
from adapters.store import AdapterStore, StoreEntry
from adapters.validation import AdapterSpec, check_adapter_name
from deployments.tenancy.access import can_use, not_found
from deployments.tenancy.keys import Principal


def visible_entry(store: AdapterStore, model: str, principal: Principal) -> StoreEntry:
    """The version `model` names as `principal` sees it: `name@v` if it may use that
    version, a bare `name` = the newest version it may use (a newer private version of
    someone else's adapter does not exist for it). Anything else: the one not-found."""
    name, version = split_model_id(model)
    if version is not None:
        entry = store.entry(model)
        if not can_use(principal, entry):
            raise not_found(model)
        return entry
    try:
        check_adapter_name(name)
    except AdapterInvalid:
        raise not_found(model) from None
    visible = [v for v in store.versions(name) if can_use(principal, v)]
    if not visible:
        raise not_found(model)
    return visible[-1]


class ModelCatalog:
    def __init__(self, store: AdapterStore, base_name: str, base_source: str, created: int):
        self.store = store
        self.base_name = base_name
        self.base_source = base_source
        self.created = created

    def resolve(self, model: str, principal: Principal) -> AdapterSpec | None:
        """None means the base model; AdapterNotFound (also for adapters `principal` may
        not use) or AdapterInvalid (exists but not servable)."""
        if model == self.base_name:
            return None
        entry = visible_entry(self.store, model, principal)
        if entry.spec is None:
            raise AdapterInvalid(f"The adapter `{model}` is not servable: {entry.error}", param="model")
        return entry.spec

    def card(self, model_id: str, *, root: str, parent: str | None) -> dict:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "lorafleet", "root": root, "parent": parent}

    def base_card(self) -> dict:
        return self.card(self.base_name, root=self.base_source, parent=None)

    def listing(self, principal: Principal) -> dict:
        cards = [self.base_card()]
        for name in self.store.names():
            visible = [v for v in self.store.versions(name) if can_use(principal, v)]
            if visible and visible[-1].spec is not None:
                cards.append(self.card(name, root=name, parent=self.base_name))
        return {"object": "list", "data": cards}

    def describe(self, model: str, principal: Principal) -> dict:
        adapter = self.resolve(model, principal)
        if adapter is None:
            return self.base_card()
        return self.card(model, root=adapter.name, parent=self.base_name)

    def owned_by(self, tenant: str) -> list[str]:
        """Names of the adapters whose latest version `tenant` owns (for its usage report)."""
        return [e.name for e in self.store.entries() if e.owner is not None and e.owner == tenant]
