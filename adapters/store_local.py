"""The local-directory backend: `root/<name>/<version>/{files/..., manifest.json}`.

A version is staged in `root/.staging/<random>/` (files, then the manifest) and made
visible by one `rename` onto `root/<name>/<version>`: atomic on a POSIX filesystem,
and it fails if the version already exists, which is how two concurrent uploads of
the same version are told apart. The legacy flat layout (`root/<name>/adapter_config.json`
and weights, no manifest) is still read, as version 1 of `name`.

Deleting a version removes its manifest (invisible at once) and its files, and leaves
`root/<name>/<version>/.deleted` as a tombstone: the number stays claimed (a non-empty
folder, so `rename` onto it fails even for an explicit version number), so
the next upload can never take it and a client pinned to `name@3` can never get other
weights under that id (S3 keeps its `.claim` object for the same reason).

Beside the adapters (names starting with `.` are never adapter names):
`root/.names/<name>.json` is the name's ownership claim, created with `link(2)` (fails
if it exists: of two tenants racing for a new name exactly one wins);
`root/.owners/<tenant key>/<name>` indexes the names a tenant owns, and
`root/.reservations/<tenant key>/<token>.json` holds uploads in flight (quota).
"""

from __future__ import annotations

import errno
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from adapters.errors import AdapterExists
from adapters.manifest import MANIFEST_NAME, VERSION_PATTERN
from adapters.validation import ADAPTER_CONFIG, ADAPTER_NAME_PATTERN

FILES_DIR = "files"
STAGING_DIR = ".staging"
NAMES_DIR = ".names"
OWNERS_DIR = ".owners"
RESERVATIONS_DIR = ".reservations"
TOMBSTONE = ".deleted"  # marks a deleted version's folder, which keeps its number claimed
STALE_STAGING_S = 3600  # no upload takes an hour to stage; older leftovers are from crashes
CHUNK = 1 << 20


class LocalBackend:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def refresh(self) -> None:
        """Nothing cached: every call reads the directory."""

    def _version_dirs(self, name: str) -> list[Path]:
        folder = self.root / name
        try:
            return [p for p in folder.iterdir() if p.is_dir() and VERSION_PATTERN.fullmatch(p.name)]
        except OSError:
            return []

    def names(self) -> list[str]:
        """Names with a visible version or a legacy flat folder (a name whose versions
        are all deleted keeps only tombstones, and is not listed)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir()
            if p.is_dir() and ADAPTER_NAME_PATTERN.fullmatch(p.name) and (self.flat_folder(p.name) or self.versions(p.name))
        )

    def versions(self, name: str) -> dict[str, object]:
        found = {}
        for folder in self._version_dirs(name):
            try:
                st = (folder / MANIFEST_NAME).stat()
            except OSError:
                continue  # no manifest: a deleted version (tombstone), invisible
            found[folder.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return found

    def claimed_versions(self, name: str) -> set[str]:
        return {p.name for p in self._version_dirs(name)}

    def read_manifest(self, name: str, version: str) -> bytes:
        return (self.root / name / version / MANIFEST_NAME).read_bytes()

    def iter_file(self, name: str, version: str, relpath: str, max_bytes: int, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The file's bytes in chunks, at most `max_bytes + 1` of them (so a file that grew
        in the store is seen as corrupted, never read whole); FileNotFoundError if missing."""
        with (self.root / name / version / FILES_DIR / relpath).open("rb") as f:
            remaining = max_bytes + 1
            while remaining > 0 and (chunk := f.read(min(chunk_size, remaining))):
                remaining -= len(chunk)
                yield chunk

    def commit(self, name: str, version: str, folder: Path, files: dict[str, dict], manifest: bytes) -> None:
        self._sweep_staging()
        staging = self.root / STAGING_DIR / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            for relpath in files:
                target = staging / FILES_DIR / relpath
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / relpath, target)
            _fsync_tree(staging / FILES_DIR)
            self._write_manifest(staging, manifest)  # last: the version is complete from here on
            (self.root / name).mkdir(exist_ok=True)
            try:
                os.rename(staging, self.root / name / version)
            except OSError as err:
                if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise AdapterExists(f"adapter `{name}@{version}` already exists", param="version") from None
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _sweep_staging(self) -> None:
        """Remove what crashed uploads left in the staging area (never visible; only space)."""
        cutoff = time.time() - STALE_STAGING_S
        try:
            leftovers = [p for p in (self.root / STAGING_DIR).iterdir() if p.stat().st_mtime < cutoff]
        except OSError:
            return
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)

    def _write_manifest(self, staging: Path, manifest: bytes) -> None:
        path = staging / MANIFEST_NAME
        with path.open("wb") as f:
            f.write(manifest)
            f.flush()
            os.fsync(f.fileno())

    def delete(self, name: str, version: str) -> bool:
        """Remove the manifest (invisible at once), then the files; the empty version
        folder stays as a tombstone so the number is never handed out again."""
        folder = self.root / name / version
        if not (folder / MANIFEST_NAME).exists():
            return False
        (folder / TOMBSTONE).touch()  # first: rename(2) replaces an *empty* folder, a tombstone must not be one
        try:
            (folder / MANIFEST_NAME).unlink()
        except FileNotFoundError:
            return False
        self._trash(folder / FILES_DIR)
        return True

    def _trash(self, path: Path) -> None:
        trash = self.root / STAGING_DIR / f"deleted-{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, trash)  # gone from its place at once; in-flight loads use the replicas' caches
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def flat_folder(self, name: str) -> Path | None:
        """A folder with files at its top level is a legacy flat adapter (valid or not);
        one holding only version folders is not."""
        folder = self.root / name
        try:
            return folder if any(not p.is_dir() for p in folder.iterdir()) else None
        except OSError:
            return None

    def delete_flat(self, name: str) -> bool:
        """Remove a legacy flat adapter: its version-1 tombstone first (so no upload can take
        number 1 meanwhile), then its config (it vanishes at once), then the rest."""
        folder = self.flat_folder(name)
        if folder is None:
            return False
        (folder / "1").mkdir(exist_ok=True)
        (folder / "1" / TOMBSTONE).touch()
        (folder / ADAPTER_CONFIG).unlink(missing_ok=True)
        for path in folder.iterdir():
            if path.is_file() or path.is_symlink():
                path.unlink(missing_ok=True)
            elif not VERSION_PATTERN.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)
        return True

    def location(self, name: str, version: str) -> str:
        return str(self.root / name / version / FILES_DIR)

    # ------------------------------------------------------------ name ownership

    def create_name_claim(self, name: str, record: bytes, owner_key: str | None) -> bytes | None:
        """Claim `name` with `record` unless it is claimed: None if this call claimed it,
        else the existing claim's bytes. `link(2)` of a complete temp file makes the
        claim atomic and never half-written."""
        folder = self.root / NAMES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".tmp-{uuid.uuid4().hex}"
        temp.write_bytes(record)
        try:
            os.link(temp, folder / f"{name}.json")
        except FileExistsError:
            existing = self.read_name_claim(name)
            if existing is not None:
                return existing
            return self.create_name_claim(name, record, owner_key)  # released meanwhile: try again
        finally:
            temp.unlink(missing_ok=True)
        if owner_key is not None:
            index = self.root / OWNERS_DIR / owner_key
            index.mkdir(parents=True, exist_ok=True)
            (index / name).touch()
        return None

    def read_name_claim(self, name: str) -> bytes | None:
        try:
            return (self.root / NAMES_DIR / f"{name}.json").read_bytes()
        except FileNotFoundError:
            return None

    def delete_name_claim(self, name: str, owner_key: str | None) -> bool:
        try:
            (self.root / NAMES_DIR / f"{name}.json").unlink()
        except FileNotFoundError:
            return False
        if owner_key is not None:
            (self.root / OWNERS_DIR / owner_key / name).unlink(missing_ok=True)
        return True

    def owned_names(self, owner_key: str) -> set[str]:
        try:
            return {p.name for p in (self.root / OWNERS_DIR / owner_key).iterdir()}
        except OSError:
            return set()

    # ------------------------------------------------------------- reservations

    def add_reservation(self, owner_key: str, token: str, record: bytes) -> None:
        folder = self.root / RESERVATIONS_DIR / owner_key
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".tmp-{token}"
        temp.write_bytes(record)
        os.rename(temp, folder / f"{token}.json")

    def reservations(self, owner_key: str) -> list[tuple[str, bytes, float]]:
        """(token, record, age in seconds) of every reservation of the tenant."""
        found = []
        now = time.time()
        try:
            paths = [p for p in (self.root / RESERVATIONS_DIR / owner_key).iterdir() if p.suffix == ".json"]
        except OSError:
            return []
        for path in paths:
            try:
                found.append((path.stem, path.read_bytes(), now - path.stat().st_mtime))
            except FileNotFoundError:
                continue  # released meanwhile
        return found

    def delete_reservation(self, owner_key: str, token: str) -> None:
        (self.root / RESERVATIONS_DIR / owner_key / f"{token}.json").unlink(missing_ok=True)


def _fsync_tree(folder: Path) -> None:
    """Weights on disk before the manifest that vouches for them."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
