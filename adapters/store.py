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

Names and versions:

- A version number is never handed out twice: a deleted version leaves a tombstone
  (local) or its claim (S3), so `name@3` can never silently become other weights.
- A name has one owner, claimed atomically by its first upload (`name_owner`): of two
  tenants racing for a new name exactly one wins, the other gets NameTaken, the same
  error whether the name's owner published privately or publicly. The claim outlives
  the name's versions: after every version is deleted the name still belongs to its
  owner (a public name can never be taken over by another tenant whose weights would
  then answer the callers of the old one), until an admin calls `release_name`.

Bounded resources: per-tenant storage quotas (`adapters.quota`), a node-local cache
collected to a size cap without ever removing a version in use (`adapters.cache`, and
`pin`), files streamed in chunks (`materialize`, `iter_file`, `iter_archive`), and the
per-version cache of parsed manifests bounded (LRU).

Every method is safe to call from any thread (the ingress runs them off its event loop
with `asyncio.to_thread`): shared state is the LRU cache of entries (under a lock held
for dict operations only) and the backend's listing (see `store_s3`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from adapters.archive import iter_tar_gz
from adapters.backend import StoreBackend
from adapters.cache import AdapterCache, CachePin, CollectReport
from adapters.errors import AdapterExists, AdapterInvalid, AdapterLoadError, AdapterNotFound, NameTaken
from adapters.manifest import Manifest, check_version, check_visibility, hash_folder, split_model_id
from adapters.ownership import read_ownership
from adapters.quota import StorageUsage, TenantQuota, check, owner_key, reservation_record, reserved
from adapters.store_local import LocalBackend
from adapters.validation import (
    PICKLE_SUFFIXES,
    PROJECTION_MODULES,
    AdapterSpec,
    BaseModelInfo,
    ServedBase,
    base_for,
    check_adapter_name,
    validate_adapter,
)

logger = logging.getLogger(__name__)

LEGACY_VERSION = "1"
_PUBLISH_ATTEMPTS = 20
CHUNK = 1 << 20
# Parsed manifests / validated folders kept per process. Bounded so a process that has
# seen every version of a large registry does not keep them all; a miss costs one
# manifest read.
MAX_CACHED_ENTRIES = 10_000


@dataclass(frozen=True)
class NameClaim:
    """Who owns an adapter name (None: the operator, i.e. admins only). `recorded` is
    False for a name published before claims existed, whose owner is read from its
    latest version until its next upload records the claim."""

    name: str
    owner: str | None
    recorded: bool = True


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
        with path.open("rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
    return digest.hexdigest()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(CHUNK), b"")


def _claim_owner(raw: bytes) -> str | None:
    """The owner a claim records; an unreadable claim makes the name the operator's
    (admins only), never anyone's by accident."""
    try:
        owner = json.loads(raw).get("owner")
    except (ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) and owner else None


def _not_found(model: str) -> AdapterNotFound:
    return AdapterNotFound(f"The model `{model}` does not exist.", param="model")


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "lorafleet-adapter-cache"


class AdapterStore:
    """Adapters in a backend, each validated against the served base it names and that
    base's engine limits.

    A fleet may serve several bases; the store is one namespace over all of them (a name
    is one adapter whatever its base), and every version is bound to the base its
    `base_model_name_or_path` resolves to (`AdapterSpec.base`). A version whose base is
    not served (any more) stays in the store, listed as unservable with that reason."""

    def __init__(
        self,
        backend: StoreBackend,
        *,
        base: BaseModelInfo | None = None,
        max_lora_rank: int = 16,
        allowed_target_modules: tuple[str, ...] = PROJECTION_MODULES,
        bases: tuple[ServedBase, ...] = (),
        cache_dir: str | Path | None = None,
        cache_max_bytes: int | None = None,
        quota: TenantQuota | None = None,
        reserved_names: frozenset[str] = frozenset(),
        max_cached_entries: int = MAX_CACHED_ENTRIES,
    ):
        if not bases:
            if base is None:
                raise TypeError("AdapterStore needs `base` or `bases`")
            bases = (ServedBase(base, max_lora_rank, allowed_target_modules),)
        self.backend = backend
        self.bases = tuple(bases)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache = AdapterCache(self.cache_dir, cache_max_bytes)
        self.quota = quota or TenantQuota()
        self.reserved_names = reserved_names.union(*(b.info.accepted_names for b in self.bases))
        self._cache: OrderedDict[tuple[str, str], tuple[object, StoreEntry]] = OrderedDict()
        self._max_cached_entries = max_cached_entries
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- reading

    def _cached(self, key: tuple[str, str], signature: object, build) -> StoreEntry:
        with self._lock:
            cached = self._cache.get(key)
            if cached and cached[0] == signature:
                self._cache.move_to_end(key)
                return cached[1]
        entry = build()
        if entry.error:
            logger.warning("adapter %s refused: %s", entry.id, entry.error)
        with self._lock:
            self._cache[key] = (signature, entry)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_cached_entries:
                self._cache.popitem(last=False)
        return entry

    def _flat_entry(self, name: str, folder: Path) -> StoreEntry:
        def build() -> StoreEntry:
            ownership, problem = read_ownership(folder)
            owned = {"owner": ownership.owner, "visibility": ownership.visibility}
            try:
                if problem:
                    raise AdapterInvalid(problem)
                spec = validate_adapter(folder, bases=self.bases)
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
        """Re-check a published version against this fleet's current bases and limits
        (the config may have changed since it was uploaded: a base removed from it leaves
        its adapters here, unservable with that reason); no file is read."""
        base = base_for(m.base_model, self.bases)
        if m.rank > base.max_lora_rank:
            raise AdapterInvalid(f"adapter rank {m.rank} exceeds the max_lora_rank {base.max_lora_rank} of base {base.name!r}")
        not_enabled = sorted(set(m.target_modules) - set(base.allowed_target_modules))
        if not_enabled:
            raise AdapterInvalid(f"target modules {not_enabled} are not enabled on base {base.name!r}")
        return AdapterSpec(
            name=m.name, path=self.backend.location(m.name, m.version), rank=m.rank, alpha=m.alpha,
            target_modules=m.target_modules, base_model=m.base_model, fingerprint=m.fingerprint,
            version=m.version, owner=m.owner, visibility=m.visibility, files=m.file_entries(), base=base.name,
        )

    @property
    def base(self) -> BaseModelInfo:
        """The first served base (a one-base fleet's only one)."""
        return self.bases[0].info

    def served_base(self, name: str) -> ServedBase:
        return next(b for b in self.bases if b.name == name)

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
        """Validate `folder` as adapter `name` and publish it as a new version owned by
        `owner`. Nothing is written unless every check passes; then, in this order: the
        owner's quota is reserved (QuotaExceeded), the name is claimed for `owner` or
        must already be its (NameTaken: an admin publishing under a tenant's name passes
        that tenant as `owner`), and the version is committed (AdapterExists)."""
        check_adapter_name(name)
        if name in self.reserved_names:
            raise AdapterInvalid(f"the adapter name {name!r} is a base model's name; choose another", param="name")
        visibility = check_visibility(visibility)
        if version is not None:
            version = check_version(version)
        links = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_symlink())
        if links:
            raise AdapterInvalid(f"symbolic links are refused in an adapter folder: {', '.join(links)}")
        pickles = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise AdapterInvalid(f"pickle weight files are refused (use safetensors): {', '.join(pickles)}")
        spec = validate_adapter(folder, bases=self.bases, name=name)
        self._check_same_base(name, spec.base)
        files = hash_folder(folder)
        with self._reservation(owner, name, sum(f["size"] for f in files.values())):
            self._claim_name(name, owner)
            manifest = self._commit(folder, name, version, files, spec, owner, visibility, source)
        logger.info("published adapter %s@%s (%d files) to %s", name, manifest.version, len(files), self.backend.describe())
        return manifest

    def _check_same_base(self, name: str, base: str) -> None:
        """A name is one adapter whatever its base: a new version must be for the base its
        servable versions are bound to (AdapterExists, 409). Otherwise `name` would answer
        from one base and `name@1` from another. Versions whose base is no longer served
        do not bind the name (its owner may move it to a served base)."""
        bound = sorted({e.spec.base for e in self.versions(name) if e.spec is not None and e.spec.base != base})
        if bound:
            versions = [e.version for e in self.versions(name) if e.spec is not None and e.spec.base == bound[0]]
            raise AdapterExists(
                f"adapter `{name}` is an adapter of base {bound[0]!r} (version(s) {', '.join(versions)}); this upload is "
                f"for base {base!r}. An adapter name means one adapter on one base in this fleet: publish it under "
                "another name, or delete those versions first", param="name")

    def _commit(self, folder, name, version, files, spec, owner, visibility, source) -> Manifest:
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
            return manifest
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ name ownership

    def name_owner(self, name: str) -> NameClaim | None:
        """Who owns `name` (recorded claim, else the latest version's owner for a name
        published before claims existed); None if nobody does. What the API needs to
        answer an upload onto someone else's name identically for private and public
        owners."""
        raw = self.backend.read_name_claim(name)
        if raw is not None:
            return NameClaim(name, _claim_owner(raw))
        versions = self.versions(name)
        if versions:
            return NameClaim(name, versions[-1].owner, recorded=False)
        return None

    def _claim_name(self, name: str, owner: str | None) -> None:
        current = self.name_owner(name)
        if current is not None and current.owner != owner:
            raise NameTaken(name, owner=current.owner)
        if current is not None and current.recorded:
            return
        record = json.dumps({"name": name, "owner": owner, "created": time.time()}).encode()
        existing = self.backend.create_name_claim(name, record, owner_key(owner) if owner is not None else None)
        if existing is not None and _claim_owner(existing) != owner:
            raise NameTaken(name, owner=_claim_owner(existing))  # lost the race for a new name

    def release_name(self, name: str) -> bool:
        """Forget who owns `name` (an admin's decision), so anyone may claim it again.
        Only a name without visible versions can be released (AdapterExists otherwise);
        its version numbers stay burnt, so a new owner's first version is a new number."""
        if self.versions(name):
            raise AdapterExists(f"adapter `{name}` still has versions; delete them before releasing the name", param="name")
        raw = self.backend.read_name_claim(name)
        if raw is None:
            return False
        owner = _claim_owner(raw)
        return self.backend.delete_name_claim(name, owner_key(owner) if owner is not None else None)

    # ------------------------------------------------------------------- quota

    def usage(self, tenant: str) -> StorageUsage:
        """What `tenant` stores now, from a fresh listing (uploads in flight not included)."""
        self.backend.refresh()
        total = versions = 0
        with_versions = set()
        for name in self.backend.names():
            for entry in self.versions(name):
                if entry.manifest is not None and entry.manifest.owner == tenant:
                    total += entry.manifest.size
                    versions += 1
                    with_versions.add(name)
        empty = frozenset(self.backend.owned_names(owner_key(tenant)) - with_versions)
        return StorageUsage(total, versions + len(empty), empty)

    @contextmanager
    def _reservation(self, owner: str | None, name: str, size: int):
        """Hold `size` bytes and one version of `owner`'s quota while publishing (see
        adapters.quota for the guarantee): reserve, read the other reservations, then
        the committed usage, and refuse if they do not fit together."""
        if owner is None or not self.quota.enabled:
            yield
            return
        key, token = owner_key(owner), uuid.uuid4().hex
        self.backend.add_reservation(key, token, reservation_record(name, size))
        try:
            others = []
            for other, record, age in self.backend.reservations(key):
                if other == token:
                    continue
                if age > self.quota.reservation_ttl_s:  # an upload that died mid-way
                    self.backend.delete_reservation(key, other)
                    continue
                others.append(record)
            used = self.usage(owner)
            pending_bytes, pending_versions = reserved(others)
            check(self.quota, owner, used.plus(pending_bytes, pending_versions), size, 0 if name in used.empty_names else 1)
            yield
        finally:
            self.backend.delete_reservation(key, token)

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

    def file_list(self, spec: AdapterSpec) -> list[str]:
        if spec.files:
            return [path for path, _, _ in spec.files]
        folder = Path(spec.path)
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.is_symlink())

    def _verified_chunks(self, spec: AdapterSpec, relpath: str, sha: str, size: int) -> Iterator[bytes]:
        """The file's bytes as they arrive from the store, hashed on the way; a file that
        is missing, longer, shorter or different from its manifest entry raises
        AdapterLoadError (after the bytes read so far were yielded)."""
        digest = hashlib.sha256()
        count = 0
        try:
            for chunk in self.backend.iter_file(spec.name, spec.version, relpath, size):
                count += len(chunk)
                if count > size:
                    raise self._corrupted(spec, relpath)
                digest.update(chunk)
                yield chunk
        except FileNotFoundError:
            raise AdapterLoadError(
                f"adapter `{spec.served_id}` is incomplete in the store ({relpath} is missing); it will not be served",
                retriable=False, param="model",
            ) from None
        if count != size or digest.hexdigest() != sha:
            raise self._corrupted(spec, relpath)

    def iter_file(self, spec: AdapterSpec, relpath: str) -> Iterator[bytes]:
        """One file of a version in chunks, checked against its manifest as it streams."""
        if spec.files:
            expected = {path: (sha, size) for path, sha, size in spec.files}
            sha, size = expected[relpath]
            return self._verified_chunks(spec, relpath, sha, size)
        return _file_chunks(Path(spec.path) / relpath)

    def read_file(self, spec: AdapterSpec, relpath: str) -> bytes:
        """One whole file (its manifest bounds the size). Kept for callers that need the
        bytes at once; downloads use `iter_archive`."""
        return b"".join(self.iter_file(spec, relpath))

    def iter_archive(self, spec: AdapterSpec) -> Iterator[bytes]:
        """The version's files as a tar.gz, produced chunk by chunk as they are read from
        the store and verified (what `pull` downloads; memory stays at one chunk). A file
        that fails its check raises AdapterLoadError mid-stream: the archive is then cut
        short, and a cut gzip never unpacks, so a client can never keep corrupted files."""
        if spec.files:
            members = ((path, size, self._verified_chunks(spec, path, sha, size)) for path, sha, size in spec.files)
        else:
            folder = Path(spec.path)
            members = ((rel, (folder / rel).stat().st_size, _file_chunks(folder / rel)) for rel in self.file_list(spec))
        try:
            yield from iter_tar_gz(members)
        except ValueError as err:  # a legacy folder's file changed size while it was read
            raise AdapterLoadError(f"adapter `{spec.served_id}` changed while it was read: {err}", retriable=True,
                                   param="model") from None

    @staticmethod
    def _corrupted(spec: AdapterSpec, relpath: str) -> AdapterLoadError:
        return AdapterLoadError(
            f"adapter `{spec.served_id}` is corrupted in the store: {relpath} does not match the sha256 in its "
            "manifest; it will not be served (re-publish it as a new version)",
            retriable=False, param="model",
        )

    def pin(self, spec: AdapterSpec) -> CachePin:
        """A local folder holding exactly the version's verified files, held in use until
        the pin is released (`with store.pin(spec) as pin: load(pin.path)`).

        The cache collector never removes a pinned version, in this process or another on
        the node. An engine holds the pin for as long as vLLM may read the folder: at
        least across `add_lora`, and for as long as the LoRA stays registered if vLLM may
        re-read it from the path later (it does after evicting it from its CPU cache).
        A legacy flat folder is served in place and holds nothing.

        Cached under `cache_dir/<fingerprint>`; a cached copy is re-verified before reuse
        (a few MB of hashing per cold load), so a tampered cache is caught too. Files are
        streamed from the store and hashed on the way (memory: one chunk). Filling the
        cache runs the collector afterwards, so the cache returns under its cap."""
        if not spec.files:
            return CachePin(Path(spec.path))  # legacy flat folder, validated in place
        pin = self.cache.pin(spec.fingerprint)
        try:
            filled = self._ensure_cached(spec, pin.path)
        except BaseException:
            pin.release()
            raise
        if filled:
            self.collect_cache()
        return pin

    def materialize(self, spec: AdapterSpec) -> str:
        """The folder `pin` fills, returned without holding it: fine for a caller that reads
        it at once (the collector removes least recently used versions first, and this one
        was just used), but only a pin guarantees it stays."""
        with self.pin(spec) as pin:
            return str(pin.path)

    def collect_cache(self) -> CollectReport:
        """Shrink the node-local cache to `cache_max_bytes` (LRU, pinned versions kept)."""
        return self.cache.collect()

    def _ensure_cached(self, spec: AdapterSpec, target: Path) -> bool:
        """Fill `target` (pinned by the caller) unless it already holds the verified files;
        True if it was filled."""
        if target.is_dir():
            if _verify_folder(target, spec.files):
                return False
            shutil.rmtree(target, ignore_errors=True)
        staging = self.cache.staging()
        try:
            for relpath, sha, size in spec.files:
                path = staging / relpath
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("wb") as out:
                    for chunk in self._verified_chunks(spec, relpath, sha, size):
                        out.write(chunk)
            try:  # defense in depth: the files must still pass the serving checks, on the same base
                checked = validate_adapter(staging, bases=self.bases, name=spec.name)
                if checked.base != spec.base:
                    raise AdapterInvalid(f"its files name base {checked.base!r}, its manifest {spec.base!r}")
            except AdapterInvalid as err:
                raise AdapterLoadError(f"adapter `{spec.served_id}` is not servable: {err.message}", retriable=False, param="model") from None
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():  # another replica on this node won the race: use its copy
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True


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
    base: BaseModelInfo | None = None,
    max_lora_rank: int = 16,
    allowed_target_modules: tuple[str, ...] = PROJECTION_MODULES,
    bases: tuple[ServedBase, ...] = (),
    cache_dir: str | None = None,
    cache_max_bytes: int | None = None,
    quota: TenantQuota | None = None,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    refresh_s: float = 2.0,
    reserved_names: frozenset[str] = frozenset(),
) -> AdapterStore:
    """Open the store named by a config's `adapters.uri` (a directory or s3://bucket/prefix)."""
    common = dict(base=base, max_lora_rank=max_lora_rank, allowed_target_modules=allowed_target_modules, bases=bases,
                  cache_dir=cache_dir, cache_max_bytes=cache_max_bytes, quota=quota, reserved_names=reserved_names)
    if uri.startswith("s3://"):
        from adapters.store_s3 import S3Backend

        return AdapterStore(S3Backend(uri, endpoint_url=s3_endpoint_url, region=s3_region, refresh_s=refresh_s), **common)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"adapter store {uri!r}: use a local directory or an s3:// URI")
    return LocalAdapterStore(uri.removeprefix("file://"), **common)
