"""The node-local adapter cache: verified copies of published versions, kept under a
size cap, least recently used first out, never a version in use.

Layout under `root` (`adapters.cache_dir`, shared by every replica on the node):
`<fingerprint>/` holds one version's files (the folder vLLM loads),
`.locks/<fingerprint>.lock` is its pin lock, `.tmp-*` are folders being filled or removed.

**Pins.** Using a cached version means holding a shared `flock` on its lock file
(`pin`): the store holds one while it checks or fills the folder, an engine while vLLM
may read it. The collector removes a version only under an exclusive, non-blocking
`flock`, so a pinned version is skipped, in this process or any other on the node. The
kernel drops a dead process's locks, so a crashed replica never pins anything forever.
(`flock` is per open file, so two pins in one process are two shared locks.) The lock
file is removed with its folder; a pin that raced with the removal sees its lock file
replaced (inode check) and takes the new one.

**Last use** is the lock file's mtime, touched on pin and on release.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

LOCKS_DIR = ".locks"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_S = 3600


class CachePin:
    """A version's cache folder held in use; `release()` (or leaving the `with`) ends it.
    `path` is the folder to load. A pin of a legacy flat adapter (served from the store's
    own folder) holds no lock."""

    def __init__(self, path: Path, lock_path: Path | None = None, fd: int | None = None):
        self.path = path
        self._lock_path = lock_path
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.utime(fd)  # last use
        except OSError:
            pass
        os.close(fd)  # drops the shared lock

    def __enter__(self) -> "CachePin":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten pin must not hold the version forever
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the kernel drops the lock anyway
            pass


@dataclass(frozen=True)
class CollectReport:
    kept_bytes: int
    removed: tuple[str, ...]
    pinned_over_cap: bool  # still over the cap because every other version is in use


class AdapterCache:
    def __init__(self, root: Path, max_bytes: int | None = None):
        self.root = Path(root)
        self.max_bytes = max_bytes

    def folder(self, fingerprint: str) -> Path:
        return self.root / fingerprint

    def _lock_path(self, fingerprint: str) -> Path:
        return self.root / LOCKS_DIR / f"{fingerprint}.lock"

    def staging(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def pin(self, fingerprint: str) -> CachePin:
        """Hold `fingerprint`'s folder in use (it may not exist yet: the holder fills it)."""
        lock_path = self._lock_path(fingerprint)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a collector removes this version
            try:
                current = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                os.utime(fd)
                return CachePin(self.folder(fingerprint), lock_path, fd)
            os.close(fd)  # the collector removed that lock file: take the new one

    def versions(self) -> list[tuple[str, int, float]]:
        """(fingerprint, bytes, last use) of every complete cached version."""
        found = []
        try:
            children = list(self.root.iterdir())
        except OSError:
            return []
        for child in children:
            if child.name.startswith(".") or not child.is_dir():
                continue
            lock_path = self._lock_path(child.name)
            try:
                last_use = lock_path.stat().st_mtime
            except FileNotFoundError:  # cached before pins existed: last use = the folder's
                try:
                    last_use = child.stat().st_mtime
                except FileNotFoundError:
                    continue
                lock_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    os.utime(fd, (last_use, last_use))
                finally:
                    os.close(fd)
            found.append((child.name, _tree_size(child), last_use))
        return found

    def collect(self) -> CollectReport:
        """Remove least recently used versions until the cache fits `max_bytes`, skipping
        every pinned one; sweep leftovers of crashed fills."""
        self._sweep_temp()
        versions = self.versions()
        total = sum(size for _, size, _ in versions)
        removed = []
        if self.max_bytes is not None and total > self.max_bytes:
            for fingerprint, size, last_use in sorted(versions, key=lambda v: v[2]):
                if total <= self.max_bytes:
                    break
                if self._remove_unpinned(fingerprint, last_use):
                    total -= size
                    removed.append(fingerprint)
        over = self.max_bytes is not None and total > self.max_bytes
        if over:
            logger.warning("adapter cache %s holds %d bytes, over its cap of %d: every other version is in use",
                           self.root, total, self.max_bytes)
        if removed:
            logger.info("adapter cache %s: removed %d least recently used version(s), %d bytes kept",
                        self.root, len(removed), total)
        return CollectReport(total, tuple(removed), over)

    def _remove_unpinned(self, fingerprint: str, seen_last_use: float) -> bool:
        lock_path = self._lock_path(fingerprint)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # pinned
            try:
                st = os.stat(lock_path)
            except FileNotFoundError:
                return False
            if st.st_ino != os.fstat(fd).st_ino or st.st_mtime > seen_last_use:
                return False  # replaced, or used since the scan: no longer the least recent
            trash = self.root / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
            try:
                os.rename(self.folder(fingerprint), trash)
            except FileNotFoundError:
                pass
            os.unlink(lock_path)  # under the exclusive lock: a waiting pin re-checks the inode
            shutil.rmtree(trash, ignore_errors=True)
            return True
        finally:
            os.close(fd)

    def _sweep_temp(self) -> None:
        cutoff = time.time() - STALE_TEMP_S
        try:
            leftovers = [p for p in self.root.iterdir() if p.name.startswith(TEMP_PREFIX) and p.stat().st_mtime < cutoff]
        except OSError:
            return
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)


def _tree_size(folder: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, filename)).st_size
            except OSError:
                pass
    return total
