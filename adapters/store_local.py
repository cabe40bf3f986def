"""The local-directory backend: `root/<name>/<version>/{files/..., manifest.json}`.

A version is staged in `root/.staging/<random>/` (files, then the manifest) and made
visible by one `rename` onto `root/<name>/<version>`: atomic on a POSIX filesystem,
and it fails if the version already exists, which is how two concurrent uploads of
the same version are told apart. The legacy flat layout (`root/<name>/adapter_config.json`
and weights, no manifest) is still read, as version 1 of `name`.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
import uuid
from pathlib import Path

from adapters.errors import AdapterExists
from adapters.manifest import MANIFEST_NAME, VERSION_PATTERN
from adapters.validation import ADAPTER_CONFIG, ADAPTER_NAME_PATTERN

FILES_DIR = "files"
STAGING_DIR = ".staging"
STALE_STAGING_S = 3600  # no upload takes an hour to stage; older leftovers are from crashes


class LocalBackend:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def _version_dirs(self, name: str) -> list[Path]:
        folder = self.root / name
        try:
            return [p for p in folder.iterdir() if p.is_dir() and VERSION_PATTERN.fullmatch(p.name)]
        except OSError:
            return []

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and ADAPTER_NAME_PATTERN.fullmatch(p.name))

    def versions(self, name: str) -> dict[str, object]:
        found = {}
        for folder in self._version_dirs(name):
            try:
                st = (folder / MANIFEST_NAME).stat()
            except OSError:
                continue  # no manifest: an incomplete version, invisible
            found[folder.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return found

    def claimed_versions(self, name: str) -> set[str]:
        return {p.name for p in self._version_dirs(name)}

    def read_manifest(self, name: str, version: str) -> bytes:
        return (self.root / name / version / MANIFEST_NAME).read_bytes()

    def read_file(self, name: str, version: str, relpath: str, max_bytes: int) -> bytes:
        with (self.root / name / version / FILES_DIR / relpath).open("rb") as f:
            return f.read(max_bytes + 1)

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
        folder = self.root / name / version
        if not (folder / MANIFEST_NAME).exists():
            return False
        trash = self.root / STAGING_DIR / f"deleted-{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(folder, trash)  # invisible at once; in-flight loads use the replicas' caches
        except FileNotFoundError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        self._remove_empty(name)
        return True

    def flat_folder(self, name: str) -> Path | None:
        """A folder with files at its top level is a legacy flat adapter (valid or not);
        one holding only version folders is not."""
        folder = self.root / name
        try:
            return folder if any(not p.is_dir() for p in folder.iterdir()) else None
        except OSError:
            return None

    def delete_flat(self, name: str) -> bool:
        folder = self.flat_folder(name)
        if folder is None:
            return False
        (folder / ADAPTER_CONFIG).unlink(missing_ok=True)
        for path in folder.iterdir():
            if path.is_file() or path.is_symlink():
                path.unlink(missing_ok=True)
            elif not VERSION_PATTERN.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)
        self._remove_empty(name)
        return True

    def _remove_empty(self, name: str) -> None:
        try:
            (self.root / name).rmdir()
        except OSError:
            pass  # other versions remain

    def location(self, name: str, version: str) -> str:
        return str(self.root / name / version / FILES_DIR)


def _fsync_tree(folder: Path) -> None:
    """Weights on disk before the manifest that vouches for them."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
