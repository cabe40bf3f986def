"""The adapter store: where adapters live, and which of them are servable.

A local directory with one sub-folder per adapter (peft layout). Every adapter is
validated before it is listed as servable or handed to an engine; results are
cached per folder and re-checked when the folder's files change, so resolving a
name on the request path costs a few `stat` calls, not a re-validation.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from adapters.errors import AdapterInvalid, AdapterNotFound
from adapters.ownership import read_ownership
from adapters.validation import (
    ADAPTER_NAME_PATTERN,
    PROJECTION_MODULES,
    AdapterSpec,
    BaseModelInfo,
    check_adapter_name,
    validate_adapter,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreEntry:
    """One folder of the store: either a servable spec or the reason it is refused.
    `owner` and `visibility` are known even for a refused adapter, so it stays hidden
    from tenants who may not see it (adapters.ownership)."""

    name: str
    spec: AdapterSpec | None
    error: str | None
    owner: str | None = None
    visibility: str = "public"


def _folder_signature(folder: Path) -> tuple:
    """Changes whenever a file in the folder is added, removed or rewritten."""
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()))
    except OSError:
        return ()


def _fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class LocalAdapterStore:
    """Adapters in `root/<name>/`, validated against one base model and engine limits."""

    def __init__(
        self,
        root: str | Path,
        *,
        base: BaseModelInfo,
        max_lora_rank: int,
        allowed_target_modules: tuple[str, ...] = PROJECTION_MODULES,
    ):
        self.root = Path(root)
        self.base = base
        self.max_lora_rank = max_lora_rank
        self.allowed_target_modules = allowed_target_modules
        self._cache: dict[str, tuple[tuple, StoreEntry]] = {}
        self._lock = threading.Lock()

    def _entry(self, name: str) -> StoreEntry:
        folder = self.root / name
        signature = _folder_signature(folder)
        with self._lock:
            cached = self._cache.get(name)
        if cached and cached[0] == signature:
            return cached[1]
        ownership, problem = read_ownership(folder)
        try:
            if problem:
                raise AdapterInvalid(problem)
            spec = validate_adapter(
                folder,
                base=self.base,
                max_lora_rank=self.max_lora_rank,
                allowed_target_modules=self.allowed_target_modules,
            )
            spec = replace(spec, fingerprint=_fingerprint(folder), owner=ownership.owner, visibility=ownership.visibility)
            entry = StoreEntry(name, spec, None, ownership.owner, ownership.visibility)
        except AdapterInvalid as err:
            entry = StoreEntry(name, None, err.message, ownership.owner, ownership.visibility)
            logger.warning("adapter %r refused: %s", name, err.message)
        with self._lock:
            self._cache[name] = (signature, entry)
        return entry

    def names(self) -> list[str]:
        """Folder names that could be adapters (valid or not), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and ADAPTER_NAME_PATTERN.fullmatch(p.name))

    def entries(self) -> list[StoreEntry]:
        """Every adapter folder with its verdict: the store's report."""
        return [self._entry(name) for name in self.names()]

    def list_valid(self) -> list[AdapterSpec]:
        return [e.spec for e in self.entries() if e.spec is not None]

    def resolve(self, name: str, visible: Callable[[StoreEntry], bool] | None = None) -> AdapterSpec:
        """The spec for `name`, or AdapterNotFound / AdapterInvalid. An adapter that
        `visible` rejects is AdapterNotFound, word for word as a missing one."""
        try:
            check_adapter_name(name)
        except AdapterInvalid:
            raise AdapterNotFound(f"The model `{name}` does not exist.", param="model") from None
        if not (self.root / name).is_dir():
            raise AdapterNotFound(f"The model `{name}` does not exist.", param="model")
        entry = self._entry(name)
        if visible is not None and not visible(entry):
            raise AdapterNotFound(f"The model `{name}` does not exist.", param="model")
        if entry.spec is None:
            raise AdapterInvalid(f"The adapter `{name}` is not servable: {entry.error}", param="model")
        return entry.spec


def open_store(uri: str, *, base: BaseModelInfo, max_lora_rank: int, allowed_target_modules: tuple[str, ...]) -> LocalAdapterStore:
    """Open the store named by a config's `adapters.uri`."""
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"adapter store {uri!r}: only local directories are supported so far")
    root = uri.removeprefix("file://")
    return LocalAdapterStore(root, base=base, max_lora_rank=max_lora_rank, allowed_target_modules=allowed_target_modules)
