"""What `GET /v1/usage` shows to whom.

Admins see every row and may filter by key, tenant, adapter and time. A tenant sees
its own keys' rows and, for each adapter it owns, what all other tenants consumed of
it in one aggregate row per adapter: an owner learns how much its adapter is used,
never by whom.
"""

from __future__ import annotations

from collections.abc import Iterable

from deployments.errors import PermissionDenied
from deployments.tenancy.keys import Principal
from deployments.tenancy.ledger import UsageLedger


def usage_report(
    principal: Principal,
    ledger: UsageLedger,
    owned_adapters: Iterable[str],
    *,
    key_id: str | None = None,
    tenant: str | None = None,
    adapter: str | None = None,
    start: float | None = None,
    end: float | None = None,
) -> dict:
    window = {"start": start, "end": end}
    if principal.is_admin:
        rows = ledger.rows(key_id=key_id, tenant=tenant, adapter=adapter, **window)
        return {"object": "usage", "data": [r.to_dict() for r in rows]}
    if tenant is not None and tenant != principal.tenant:
        raise PermissionDenied("A tenant key may only read its own tenant's usage.")
    rows = ledger.rows(key_id=key_id, tenant=principal.tenant, adapter=adapter, **window)
    owned = [a for a in owned_adapters if adapter is None or a == adapter]
    totals = ledger.adapter_totals(owned, exclude_tenant=principal.tenant, **window)
    return {
        "object": "usage",
        "data": [r.to_dict() for r in rows],
        "owned_adapters_other_tenants": [t.to_dict() for t in totals],
    }
