"""`model` names -> a base model, or an adapter version and its base; the /v1/models cards.

A tenant sees (and may call) public adapters and its own; any other adapter does not
exist for it, word for word (`deployments.tenancy.access`). Every lookup reads the
store (a few `stat`s locally, a cached listing on S3), so callers run these functions
off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Target:
    """What a request's `model` names: a served base, and an adapter of it (None: the base itself)."""

    base: str
    adapter: AdapterSpec | None = None


class ModelCatalog:
    """The fleet's models: every served base (`bases`: served name -> source) and the
    adapters bound to each (`AdapterSpec.base`). A name is a base or an adapter, never
    both (the store refuses adapter names a base answers to)."""

    def __init__(self, store: AdapterStore, bases: dict[str, str], created: int):
        self.store = store
        self.bases = dict(bases)
        self.created = created

    @property
    def base_name(self) -> str:
        """The first base (a one-base fleet's only one)."""
        return next(iter(self.bases))

    def resolve(self, model: str, principal: Principal) -> Target:
        """The base, or an adapter version `principal` may use with its base; AdapterNotFound
        (also for adapters `principal` may not use, and for a base this fleet does not
        serve) or AdapterInvalid (exists but not servable, e.g. its base is not served)."""
        if model in self.bases:
            return Target(model)
        entry = visible_entry(self.store, model, principal)
        if entry.spec is None:
            raise AdapterInvalid(f"The adapter `{model}` is not servable: {entry.error}", param="model")
        base = entry.spec.base or self.base_name
        if base not in self.bases:  # bound to a base this fleet no longer serves (a store shared with another fleet)
            raise AdapterInvalid(f"The adapter `{model}` is not servable: its base model {base!r} is not served here.",
                                 param="model")
        return Target(base, entry.spec)

    def card(self, model_id: str, *, root: str, parent: str | None) -> dict:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "lorafleet", "root": root, "parent": parent}

    def base_card(self, name: str | None = None) -> dict:
        name = name or self.base_name
        return self.card(name, root=self.bases[name], parent=None)

    def listing(self, principal: Principal) -> dict:
        """Every base, then the servable adapters `principal` may use, each with its base as `parent`."""
        cards = [self.base_card(name) for name in self.bases]
        for name in self.store.names():
            visible = [v for v in self.store.versions(name) if can_use(principal, v)]
            spec = visible[-1].spec if visible else None
            if spec is not None and (spec.base or self.base_name) in self.bases:
                cards.append(self.card(name, root=name, parent=spec.base or self.base_name))
        return {"object": "list", "data": cards}

    def describe(self, model: str, principal: Principal) -> dict:
        target = self.resolve(model, principal)
        if target.adapter is None:
            return self.base_card(target.base)
        return self.card(model, root=target.adapter.name, parent=target.base)

    def owned_by(self, tenant: str) -> list[str]:
        """Names of the adapters whose latest version `tenant` owns (for its usage report)."""
        return [e.name for e in self.store.entries() if e.owner is not None and e.owner == tenant]
