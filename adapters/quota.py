"""Per-tenant storage quotas on the registry: bytes and versions a tenant's adapters
may take in the store.

**What counts.** Every visible version whose manifest names the tenant as owner (its
files' bytes, and one version each), plus one version for each name the tenant has
claimed and holds no visible version under (claims outlive deletion, see
`AdapterStore.release_name`), plus every upload of the tenant still in flight.
Operator-owned adapters (owner None) count against nobody.

**The guarantee.** Two concurrent uploads can never both squeeze past the limit, on
one process or many, over a local directory or S3: each upload first records a
reservation (its bytes, one version), then reads the tenant's reservations, then lists
its committed versions afresh, and goes ahead only if all of them together fit. Of two
racing uploads, at least one sees the other (its reservation, or, once released, its
committed version: the reservation is dropped only after the commit), so they never
both pass when together they do not fit. Near the limit both may be refused (each
counts the other): a client retries. This needs read-after-write consistent listings,
which a POSIX directory and S3 (since 2020) give. A reservation older than
`reservation_ttl_s` (an upload that crashed mid-way) is ignored and swept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from adapters.errors import QuotaExceeded

BYTES_FIELD = "adapters.tenant_max_bytes"
VERSIONS_FIELD = "adapters.tenant_max_versions"


@dataclass(frozen=True)
class TenantQuota:
    """None: no limit of that kind."""

    max_bytes: int | None = None
    max_versions: int | None = None
    reservation_ttl_s: float = 3600.0

    @property
    def enabled(self) -> bool:
        return self.max_bytes is not None or self.max_versions is not None


@dataclass(frozen=True)
class StorageUsage:
    """What a tenant stores: committed bytes and versions (empty claimed names count as
    a version each), and the names behind that count."""

    bytes: int = 0
    versions: int = 0
    empty_names: frozenset[str] = frozenset()

    def plus(self, other_bytes: int, other_versions: int) -> "StorageUsage":
        return StorageUsage(self.bytes + other_bytes, self.versions + other_versions, self.empty_names)


def owner_key(tenant: str) -> str:
    """A tenant's name as a path segment / S3 key part (any string is a valid tenant)."""
    return hashlib.sha256(tenant.encode()).hexdigest()[:32]


def reservation_record(name: str, size: int) -> bytes:
    return json.dumps({"name": name, "bytes": size, "versions": 1}).encode()


def reserved(records: list[bytes]) -> tuple[int, int]:
    """(bytes, versions) that in-flight uploads hold; an unreadable record counts as one
    version of zero bytes (it exists, so something is in flight)."""
    total_bytes = total_versions = 0
    for raw in records:
        try:
            data = json.loads(raw)
            total_bytes += max(0, int(data.get("bytes", 0)))
        except (ValueError, TypeError, AttributeError):
            pass
        total_versions += 1
    return total_bytes, total_versions


def check(quota: TenantQuota, tenant: str, used: StorageUsage, adding_bytes: int, adding_versions: int) -> None:
    """QuotaExceeded naming the limit (and its config field) that publishing would break."""
    if quota.max_versions is not None and used.versions + adding_versions > quota.max_versions:
        raise QuotaExceeded(
            f"Storage quota exceeded: tenant {tenant!r} already stores {used.versions} adapter version(s) (uploads in "
            f"flight and claimed names included); the limit is {quota.max_versions} ({VERSIONS_FIELD}). "
            "Delete versions to make room.",
            tenant=tenant, limit="versions", used=used.versions, maximum=quota.max_versions, field=VERSIONS_FIELD,
        )
    if quota.max_bytes is not None and used.bytes + adding_bytes > quota.max_bytes:
        raise QuotaExceeded(
            f"Storage quota exceeded: tenant {tenant!r} already stores {used.bytes} bytes of adapters (uploads in "
            f"flight included); this version's {adding_bytes} bytes would pass the limit of {quota.max_bytes} bytes "
            f"({BYTES_FIELD}). Delete versions to make room.",
            tenant=tenant, limit="bytes", used=used.bytes, maximum=quota.max_bytes, field=BYTES_FIELD,
        )
