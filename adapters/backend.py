"""What a storage backend must do for the adapter store, and nothing more.

The store's rules (validation, versions, manifests, integrity) live once in
`adapters.store`; a backend only moves bytes. Its one hard promise is atomic
visibility: `commit` writes the files first and the manifest last, and only a
version with a manifest is listed, so a crash mid-write leaves nothing visible.
"""

from __future__ import annotations

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

    def read_file(self, name: str, version: str, relpath: str, max_bytes: int) -> bytes:
        """One file of a committed version; FileNotFoundError when missing. Reads at most
        `max_bytes + 1` bytes, so a file that grew in the store cannot exhaust memory."""

    def commit(self, name: str, version: str, folder: Path, files: dict[str, dict], manifest: bytes) -> None:
        """Publish `folder`'s files as `name@version`, manifest last; AdapterExists if the
        version is taken (also when a concurrent upload took it first)."""

    def delete(self, name: str, version: str) -> bool:
        """Remove one committed version, manifest first (invisible at once). False if absent."""

    def flat_folder(self, name: str) -> Path | None:
        """A legacy flat adapter folder (`root/<name>/adapter_config.json`), local only."""

    def delete_flat(self, name: str) -> bool:
        """Remove a legacy flat adapter's files (its config first, so it vanishes at once)."""

    def location(self, name: str, version: str) -> str:
        """A human-readable location of the version's files (shown as the spec's path)."""
