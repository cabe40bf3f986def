"""`model` names -> the base model or an adapter version, and the /v1/models cards.

A tenant sees (and may call) public adapters and its own; any other adapter does not
exist for it, word for word (`deployments.tenancy.access`). Every lookup reads the
store (a few `stat`s locally, a cached listing on S3), so callers run these functions
off the event loop.
"""

from __future__ import annotations

from adapters.store import AdapterStore
from adapters.validation import AdapterSpec
from deployments.tenancy.access import can_use
from deployments.tenancy.keys import Principal


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
        return self.store.resolve(model, lambda entry: can_use(principal, entry))

    def card(self, model_id: str, *, root: str, parent: str | None) -> dict:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "lorafleet", "root": root, "parent": parent}

    def base_card(self) -> dict:
        return self.card(self.base_name, root=self.base_source, parent=None)

    def listing(self, principal: Principal) -> dict:
        cards = [self.base_card()]
        cards += [self.card(spec.name, root=spec.name, parent=self.base_name)
                  for spec in self.store.list_valid() if can_use(principal, spec)]
        return {"object": "list", "data": cards}

    def describe(self, model: str, principal: Principal) -> dict:
        adapter = self.resolve(model, principal)
        if adapter is None:
            return self.base_card()
        return self.card(model, root=adapter.name, parent=self.base_name)

    def owned_by(self, tenant: str) -> list[str]:
        """Names of the adapters whose latest version `tenant` owns (for its usage report)."""
        return [e.name for e in self.store.entries() if e.owner is not None and e.owner == tenant]
