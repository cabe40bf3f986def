"""The adapter store: which adapters (and versions) exist, which are servable, and
how a replica gets a verified local copy of one.

The rules live here once, over a backend that only moves bytes (a local directory or
an S3-compatible bucket, `adapters.backend`):

- Publishing validates a peft folder with the same checks as serving
  (`validate_adapter`) before a byte is written, then commits files first and the
  manifest last (`adapters.manifest`): a version without a manifest does not exist.
- Versions are positive integers; `name` means the largest, `name@3` version 3.
  Published versions are never overwritten (AdapterExists, 409).
- Every call reads the backend (a local directory: a few `stat`s; S3: a listing cached
  for `refresh_s`), so every ingress and engine replica sees a new adapter without a
  restart. Parsed manifests and validated legacy folders are cached by signature.
- A replica never loads from the store directly: `materialize` downloads a version into
  a local cache folder named by its content fingerprint, checking each file's sha256
  against the manifest; a mismatch is refused and the adapter is never served.

The legacy flat layout (`root/<name>/adapter_config.json`, no manifest; the demo and
the tests use it) is still served as version 1: public with no owner, unless a
`lorafleet-manifest.json` in the folder says otherwise (`adapters.ownership`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from adapters.backend import StoreBackend
from adapters.errors import AdapterExists, AdapterInvalid, AdapterLoadError, AdapterNotFound
from adapters.manifest import Manifest, check_version, check_visibility, hash_folder, split_model_id
from adapters.ownership import read_ownership
from adapters.store_local import LocalBackend
from adapters.validation import (
    PICKLE_SUFFIXES,
    PROJECTION_MODULES,
    AdapterSpec,
    BaseModelInfo,
    check_adapter_name,
    validate_adapter,
)

logger = logging.getLogger(__name__)

LEGACY_VERSION = "1"
_PUBLISH_ATTEMPTS = 20


@dataclass(frozen=True)
class StoreEntry:
    """One adapter version: either a servable spec or the reason it is refused.
    `owner` and `visibility` are known even for a refused version, so it stays hidden
    from tenants who may not see it (deployments.tenancy.access)."""

    name: str
    spec: AdapterSpec | None
    error: str | None
    version: str = LEGACY_VERSION
    manifest: Manifest | None = None
    owner: str | None = None
    visibility: str = "public"

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


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


def _not_found(model: str) -> AdapterNotFound:
    return AdapterNotFound(f"The model `{model}` does not exist.", param="model")


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "lorafleet-adapter-cache"


class AdapterStore:
    """Adapters in a backend, validated against one base model and engine limits."""

    def __init__(
        self,
        backend: StoreBackend,
        *,
        base: BaseModelInfo,
        max_lora_rank: int,
        allowed_target_modules: tuple[str, ...] = PROJECTION_MODULES,
        cache_dir: str | Path | None = None,
        reserved_names: frozenset[str] = frozenset(),
    ):
        self.backend = backend
        self.base = base
        self.max_lora_rank = max_lora_rank
        self.allowed_target_modules = allowed_target_modules
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.reserved_names = reserved_names | base.accepted_names
        self._cache: dict[tuple[str, str], tuple[object, StoreEntry]] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- reading

    def _cached(self, key: tuple[str, str], signature: object, build) -> StoreEntry:
        with self._lock:
            cached = self._cache.get(key)
        if cached and cached[0] == signature:
            return cached[1]
        entry = build()
        if entry.error:
            logger.warning("adapter %s refused: %s", entry.id, entry.error)
        with self._lock:
            self._cache[key] = (signature, entry)
        return entry

    def _flat_entry(self, name: str, folder: Path) -> StoreEntry:
        def build() -> StoreEntry:
            ownership, problem = read_ownership(folder)
            owned = {"owner": ownership.owner, "visibility": ownership.visibility}
            try:
                if problem:
                    raise AdapterInvalid(problem)
                spec = validate_adapter(
                    folder, base=self.base, max_lora_rank=self.max_lora_rank, allowed_target_modules=self.allowed_target_modules
                )
                spec = replace(spec, fingerprint=_fingerprint(folder), version=LEGACY_VERSION, **owned)
                return StoreEntry(name, spec, None, **owned)
            except AdapterInvalid as err:
                return StoreEntry(name, None, err.message, **owned)

        return self._cached((name, ""), _folder_signature(folder), build)

    def _version_entry(self, name: str, version: str, signature: object) -> StoreEntry:
        def build() -> StoreEntry:
            try:
                manifest = Manifest.from_json(self.backend.read_manifest(name, version))
            except FileNotFoundError:
                return StoreEntry(name, None, "deleted", version, visibility="private")
            except AdapterInvalid as err:  # unreadable manifest: owner unknown, so admins only
                return StoreEntry(name, None, err.message, version, visibility="private")
            owned = {"owner": manifest.owner, "visibility": manifest.visibility}
            try:
                spec = self._spec_from_manifest(manifest)
            except AdapterInvalid as err:
                return StoreEntry(name, None, err.message, version, manifest, **owned)
            return StoreEntry(name, spec, None, version, manifest, **owned)

        return self._cached((name, version), signature, build)

    def _spec_from_manifest(self, m: Manifest) -> AdapterSpec:
        """Re-check a published version against this fleet's current base and limits
        (the config may have changed since it was uploaded); no file is read."""
        if m.base_model not in self.base.accepted_names:
            raise AdapterInvalid(f"adapter was trained on base model {m.base_model!r}, this fleet serves {sorted(self.base.accepted_names)[0]!r}")
        if m.rank > self.max_lora_rank:
            raise AdapterInvalid(f"adapter rank {m.rank} exceeds this fleet's max_lora_rank {self.max_lora_rank}")
        not_enabled = sorted(set(m.target_modules) - set(self.allowed_target_modules))
        if not_enabled:
            raise AdapterInvalid(f"target modules {not_enabled} are not enabled on this fleet")
        return AdapterSpec(
            name=m.name, path=self.backend.location(m.name, m.version), rank=m.rank, alpha=m.alpha,
            target_modules=m.target_modules, base_model=m.base_model, fingerprint=m.fingerprint,
            version=m.version, owner=m.owner, visibility=m.visibility, files=m.file_entries(),
        )

    def names(self) -> list[str]:
        """Adapter names (valid or not), sorted."""
        return self.backend.names()

    def versions(self, name: str) -> list[StoreEntry]:
        """Every visible version of `name`, oldest first (the legacy flat folder is version 1)."""
        entries = []
        folder = self.backend.flat_folder(name)
        if folder is not None:
            entries.append(self._flat_entry(name, folder))
        for version, signature in self.backend.versions(name).items():
            if folder is not None and version == LEGACY_VERSION:
                continue  # cannot be published next to a flat folder; ignore if hand-made
            entries.append(self._version_entry(name, version, signature))
        return sorted(entries, key=lambda e: int(e.version))

    def entries(self) -> list[StoreEntry]:
        """The latest version of every adapter with its verdict: the store's report."""
        return [versions[-1] for versions in map(self.versions, self.names()) if versions]

    def list_valid(self) -> list[AdapterSpec]:
        """The latest version of every servable adapter."""
        return [e.spec for e in self.entries() if e.spec is not None]

    def entry(self, model: str) -> StoreEntry:
        """The version `model` names (`name` = latest, `name@v`), valid or not; AdapterNotFound."""
        name, version = split_model_id(model)
        try:
            check_adapter_name(name)
            if version is not None:
                check_version(version)
        except AdapterInvalid:
            raise _not_found(model) from None
        versions = self.versions(name)
        if version is not None:
            versions = [e for e in versions if e.version == version]
        if not versions:
            raise _not_found(model)
        return versions[-1]

    def resolve(self, model: str, visible: Callable[[StoreEntry], bool] | None = None) -> AdapterSpec:
        """The spec for `model`, or AdapterNotFound / AdapterInvalid. A version that
        `visible` rejects is AdapterNotFound, word for word as a missing one."""
        entry = self.entry(model)
        if visible is not None and not visible(entry):
            raise _not_found(model)
        if entry.spec is None:
            raise AdapterInvalid(f"The adapter `{model}` is not servable: {entry.error}", param="model")
        return entry.spec

    # ----------------------------------------------------------------- writing

    def _next_version(self, name: str) -> str:
        used = {int(v) for v in self.backend.claimed_versions(name)}
        if self.backend.flat_folder(name) is not None:
            used.add(int(LEGACY_VERSION))
        return str(max(used, default=0) + 1)

    def publish(
        self,
        folder: Path,
        name: str,
        *,
        version: str | None = None,
        owner: str | None = None,
        visibility: str = "public",
        source: str = "upload",
    ) -> Manifest:
        """Validate `folder` as adapter `name` and publish it as a new version.
        Nothing is written unless every check passes."""
        check_adapter_name(name)
        if name in self.reserved_names:
            raise AdapterInvalid(f"the adapter name {name!r} is the base model's name; choose another", param="name")
        visibility = check_visibility(visibility)
        if version is not None:
            version = check_version(version)
        links = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_symlink())
        if links:
            raise AdapterInvalid(f"symbolic links are refused in an adapter folder: {', '.join(links)}")
        pickles = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise AdapterInvalid(f"pickle weight files are refused (use safetensors): {', '.join(pickles)}")
        spec = validate_adapter(
            folder, base=self.base, max_lora_rank=self.max_lora_rank,
            allowed_target_modules=self.allowed_target_modules, name=name,
        )
        files = hash_folder(folder)
        for attempt in range(_PUBLISH_ATTEMPTS):
            chosen = version or self._next_version(name)
            if chosen == LEGACY_VERSION and self.backend.flat_folder(name) is not None:
                raise AdapterExists(f"adapter `{name}@{chosen}` already exists", param="version")
            manifest = Manifest(
                name=name, version=chosen, files=files, base_model=spec.base_model, rank=spec.rank,
                alpha=spec.alpha, target_modules=spec.target_modules, owner=owner, visibility=visibility, source=source,
            )
            try:
                self.backend.commit(name, chosen, folder, files, manifest.to_json())
            except AdapterExists:
                if version is not None or attempt == _PUBLISH_ATTEMPTS - 1:
                    raise
                continue  # a concurrent upload took this number: take the next
            logger.info("published adapter %s@%s (%d files) to %s", name, chosen, len(files), self.backend.describe())
            return manifest
        raise AssertionError("unreachable")

    def delete(self, model: str) -> list[str]:
        """Delete `name@v`, or every version of `name`; returns the ids deleted."""
        name, version = split_model_id(model)
        entries = [self.entry(model)] if version is not None else self.versions(name)
        if not entries:
            raise _not_found(model)
        deleted = []
        flat = self.backend.flat_folder(name)
        for e in entries:
            removed = self.backend.delete_flat(name) if (flat is not None and e.manifest is None and e.version == LEGACY_VERSION) else self.backend.delete(name, e.version)
            if removed:
                deleted.append(e.id)
        with self._lock:
            for e in entries:
                self._cache.pop((name, "" if e.manifest is None and flat is not None else e.version), None)
        if not deleted:
            raise _not_found(model)
        logger.info("deleted adapter version(s) %s from %s", ", ".join(deleted), self.backend.describe())
        return deleted

    # ------------------------------------------------------- replica-side loading

    def read_file(self, spec: AdapterSpec, relpath: str) -> bytes:
        """One file of a version, checked against its manifest (used by `pull`)."""
        expected = {path: (sha, size) for path, sha, size in spec.files}
        if spec.files:
            sha, size = expected[relpath]
            data = self._fetch(spec, relpath, size)
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                raise self._corrupted(spec, relpath)
            return data
        return (Path(spec.path) / relpath).read_bytes()

    def file_list(self, spec: AdapterSpec) -> list[str]:
        if spec.files:
            return [path for path, _, _ in spec.files]
        folder = Path(spec.path)
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.is_symlink())

    def _fetch(self, spec: AdapterSpec, relpath: str, size: int) -> bytes:
        try:
            return self.backend.read_file(spec.name, spec.version, relpath, size)
        except FileNotFoundError:
            raise AdapterLoadError(
                f"adapter `{spec.served_id}` is incomplete in the store ({relpath} is missing); it will not be served",
                retriable=False, param="model",
            ) from None

    @staticmethod
    def _corrupted(spec: AdapterSpec, relpath: str) -> AdapterLoadError:
        return AdapterLoadError(
            f"adapter `{spec.served_id}` is corrupted in the store: {relpath} does not match the sha256 in its "
            "manifest; it will not be served (re-publish it as a new version)",
            retriable=False, param="model",
        )

    def materialize(self, spec: AdapterSpec) -> str:
        """A local folder holding exactly the version's verified files (what vLLM loads).

        Cached under `cache_dir/<fingerprint>`; a cached copy is re-verified before reuse
        (a few MB of hashing per cold load), so a tampered cache is caught too."""
        if not spec.files:
            return spec.path  # legacy flat folder, validated in place
        target = self.cache_dir / spec.fingerprint
        if target.is_dir():
            if _verify_folder(target, spec.files):
                return str(target)
            shutil.rmtree(target, ignore_errors=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = self.cache_dir / f".tmp-{uuid.uuid4().hex}"
        try:
            for relpath, sha, size in spec.files:
                data = self._fetch(spec, relpath, size)
                if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                    raise self._corrupted(spec, relpath)
                path = staging / relpath
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            try:  # defense in depth: the files must still pass the serving checks
                validate_adapter(staging, base=self.base, max_lora_rank=self.max_lora_rank,
                                 allowed_target_modules=self.allowed_target_modules, name=spec.name)
            except AdapterInvalid as err:
                raise AdapterLoadError(f"adapter `{spec.served_id}` is not servable: {err.message}", retriable=False, param="model") from None
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():  # another replica on this node won the race: use its copy
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return str(target)


def _verify_folder(folder: Path, files: tuple[tuple[str, str, int], ...]) -> bool:
    from adapters.manifest import sha256_file

    try:
        return all((folder / p).stat().st_size == size and sha256_file(folder / p) == sha for p, sha, size in files)
    except OSError:
        return False


class LocalAdapterStore(AdapterStore):
    """The store over a local directory (`root/<name>/...`)."""

    def __init__(self, root: str | Path, **kwargs):
        super().__init__(LocalBackend(root), **kwargs)
        self.root = Path(root)


def open_store(
    uri: str,
    *,
    base: BaseModelInfo,
    max_lora_rank: int,
    allowed_target_modules: tuple[str, ...],
    cache_dir: str | None = None,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    refresh_s: float = 2.0,
    reserved_names: frozenset[str] = frozenset(),
) -> AdapterStore:
    """Open the store named by a config's `adapters.uri` (a directory or s3://bucket/prefix)."""
    common = dict(base=base, max_lora_rank=max_lora_rank, allowed_target_modules=allowed_target_modules,
                  cache_dir=cache_dir, reserved_names=reserved_names)
    if uri.startswith("s3://"):
        from adapters.store_s3 import S3Backend

        return AdapterStore(S3Backend(uri, endpoint_url=s3_endpoint_url, region=s3_region, refresh_s=refresh_s), **common)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"adapter store {uri!r}: use a local directory or an s3:// URI")
    return LocalAdapterStore(uri.removeprefix("file://"), **common)
