"""What a storage backend must do for the adapter store, and nothing more.

The store's rules (validation, versions, manifests, integrity) live once in
`adapters.store`; a backend only moves bytes. Its one hard promise is atomic
visibility: `commit` writes the files first and the manifest last, and only a
version with a manifest is listed, so a crash mid-write leaves nothing visible.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class StoreBackend(Protocol):
    def describe(self) -> str:
        """Where the store is, for messages (never includes credentials)."""

    def names(self) -> list[str]:
        """Adapter names with at least one visible version or a legacy flat folder."""

    def versions(self, name: str) -> dict[str, object]:
        """Committed versions of `name` (manifest present) -> a signature that changes
        whenever the manifest is rewritten (cache key)."""

    def claimed_versions(self, name: str) -> set[str]:
        """Every version number in use, committed or not (a crashed upload burns its number)."""

    def read_manifest(self, name: str, version: str) -> bytes:
        """The manifest's bytes; FileNotFoundError when the version is gone."""

    def iter_file(self, name: str, version: str, relpath: str, max_bytes: int, chunk_size: int = ...) -> Iterator[bytes]:
        """One file of a committed version in chunks as they arrive; FileNotFoundError
        (on first iteration) when missing. Yields at most `max_bytes + 1` bytes, so a
        file that grew in the store is seen as corrupted and never read whole."""

    def refresh(self) -> None:
        """Make the next read see every write made so far (drop a cached listing)."""

    def commit(self, name: str, version: str, folder: Path, files: dict[str, dict], manifest: bytes) -> None:
        """Publish `folder`'s files as `name@version`, manifest last; AdapterExists if the
        version is taken (also when a concurrent upload took it first)."""

    def delete(self, name: str, version: str) -> bool:
        """Remove one committed version, manifest first (invisible at once), keeping its
        number claimed (a tombstone) so it is never handed out again. False if absent."""

    def flat_folder(self, name: str) -> Path | None:
        """A legacy flat adapter folder (`root/<name>/adapter_config.json`), local only."""

    def delete_flat(self, name: str) -> bool:
        """Remove a legacy flat adapter's files (its config first, so it vanishes at once)."""

    def location(self, name: str, version: str) -> str:
        """A human-readable location of the version's files (shown as the spec's path)."""

    # Name ownership: one claim per name, created atomically (exactly one of two racing
    # creators wins), and an index of the names each tenant (`owner_key`) owns.

    def create_name_claim(self, name: str, record: bytes, owner_key: str | None) -> bytes | None:
        """Claim `name` with `record` unless claimed: None if this call claimed it, else
        the existing claim's bytes."""

    def read_name_claim(self, name: str) -> bytes | None:
        """The claim's bytes, None if the name is unclaimed."""

    def delete_name_claim(self, name: str, owner_key: str | None) -> bool:
        """Release the name (admins only, once it has no versions). False if unclaimed."""

    def owned_names(self, owner_key: str) -> set[str]:
        """Names the tenant claimed (the quota counts those without versions)."""

    # Quota reservations: uploads in flight, per tenant (see adapters.quota).

    def add_reservation(self, owner_key: str, token: str, record: bytes) -> None:
        """Record an upload in flight, visible to every later `reservations` call."""

    def reservations(self, owner_key: str) -> list[tuple[str, bytes, float]]:
        """(token, record, age in seconds) of each of the tenant's uploads in flight."""

    def delete_reservation(self, owner_key: str, token: str) -> None:
        """Drop a reservation (after the upload committed or failed)."""
