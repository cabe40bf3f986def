"""The usage ledger's write-ahead journal: recorded usage survives the process's death.

The ledger batches usage in memory and writes it to its database every flush period;
alone, a SIGKILLed ingress (the OOM killer, a node drain gone wrong) would lose up to
one period of billing. So every `record` also appends one line to a journal file (one
`write` to an O_APPEND file: a few microseconds, and in the kernel the moment it
returns, so a process that dies right after loses nothing). At each flush the ledger
switches to a fresh journal file and applies the batch in one database transaction
that also names the old file as applied; the old file is then deleted. A file that
outlives its process (its flock is gone) is an orphan: the next ledger that opens
the same journal folder applies what it holds, unless the database already names it
as applied (the process died between the commit and the delete), so nothing is
counted twice.

While the database is unreachable the current journal keeps growing (one line, ~80
bytes, per request) and is rotated only once the batch before it is committed.

The folder must be on the node's own disk (a flock is only reliable there). What is not
covered: a machine that loses power before the kernel wrote the journal to disk (the
journal is fsynced at every flush, so that window is one flush period), and a node or
pod whose disk is gone with it while usage was still unwritten (with PostgreSQL: what
was recorded during a database outage, plus one flush period) - put the journal folder
(server.usage.journal_dir) on a volume that outlives the pod to close that window.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SUFFIX = ".journal"


@dataclass(frozen=True)
class Entry:
    minute: int
    key_id: str
    tenant: str
    adapter: str
    prompt_tokens: int
    completion_tokens: int

    def key(self) -> tuple[int, str, str, str]:
        return (self.minute, self.key_id, self.tenant, self.adapter)


class JournalFile:
    """One journal file, owned (flocked) by this process until it is closed."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.name = path.name
        self._fd = fd

    @classmethod
    def create(cls, folder: Path) -> "JournalFile":
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd)

    def append(self, entry: Entry) -> None:
        line = json.dumps([entry.minute, entry.key_id, entry.tenant, entry.adapter,
                           entry.prompt_tokens, entry.completion_tokens], separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        """Let go of the file, keeping it: an orphan for the next ledger to apply."""
        os.close(self._fd)

    def close_and_delete(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)


def read_entries(path: Path) -> list[Entry]:
    """Every complete line of a journal (a torn last line, cut by a crash mid-write, is
    skipped: its request was never answered as billed)."""
    entries = []
    for line in path.read_bytes().split(b"\n"):
        try:
            minute, key_id, tenant, adapter, prompt, completion = json.loads(line)
            entries.append(Entry(int(minute), str(key_id), str(tenant), str(adapter), int(prompt), int(completion)))
        except (ValueError, TypeError):
            continue
    return entries


def claim_orphans(folder: Path) -> list[tuple[Path, int]]:
    """Journal files no live process holds: flocked here (path, fd) for replay."""
    if not folder.is_dir():
        return []
    claimed = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # applied and deleted by its owner meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a live ledger's current journal
            continue
        if not path.exists():  # deleted between open and lock
            os.close(fd)
            continue
        claimed.append((path, fd))
    return claimed
