"""The usage ledger: requests, prompt and generated tokens per key and adapter, durable.

Every completed request adds its engine-reported usage (the same numbers as the
response's `usage`) with `record`: a dict update under a lock, and one append to a
write-ahead journal (deployments.tenancy.journal). A background thread writes what
accumulated every `flush_period_s` in one transaction, and `close` (the ingress's
shutdown) writes the rest. A SIGKILLed process loses nothing: its journal is applied
by the next ledger that opens the same file (a restarted or sibling ingress replica),
exactly once. Queries flush first, so what `GET /v1/usage` answers is exact.

SQLite in WAL mode, one row per (minute, key, tenant, adapter): small (a busy key on
one adapter adds ~1,440 rows a day) and filterable by time to the minute. Several
processes on one node may share the file (SQLite locks it); a file on a network
volume shared across nodes is not safe for SQLite, so with ingress replicas on
several nodes give each its own file (and sum them) or move to a server database.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from deployments.tenancy.journal import Entry, JournalFile, claim_orphans, read_entries

logger = logging.getLogger(__name__)

BUCKET_S = 60
ORPHAN_SCAN_PERIODS = 20  # flush periods between looks for journals of processes that died

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    minute INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    adapter TEXT NOT NULL,
    requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    PRIMARY KEY (minute, key_id, tenant, adapter)
)
"""
_APPLIED = """
CREATE TABLE IF NOT EXISTS applied_journals (name TEXT PRIMARY KEY)
"""
_UPSERT = """
INSERT INTO usage (minute, key_id, tenant, adapter, requests, prompt_tokens, completion_tokens)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (minute, key_id, tenant, adapter) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens
"""


class _Totals:
    """Shared by the ledger's row types: their JSON form adds `total_tokens`."""

    def to_dict(self) -> dict:
        return {**asdict(self), "total_tokens": self.prompt_tokens + self.completion_tokens}


@dataclass(frozen=True)
class UsageRow(_Totals):
    key_id: str
    tenant: str
    adapter: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class AdapterTotal(_Totals):
    """What keys other than the owner's consumed of one adapter, identities left out."""

    adapter: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


class UsageLedger:
    def __init__(self, path: str | Path, *, flush_period_s: float = 0.5, clock: Callable[[], float] = time.time,
                 background: bool = True, on_write_failure: Callable[[], None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._on_write_failure = on_write_failure
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(_SCHEMA)
        self._db.execute(_APPLIED)
        self._db_lock = threading.Lock()
        self._pending: dict[tuple[int, str, str, str], list[int]] = {}
        self._pending_lock = threading.Lock()
        self.journal_dir = self.path.with_name(self.path.name + ".journal")
        self._journal = JournalFile.create(self.journal_dir)
        self._unapplied: list[JournalFile] = []  # rotated out, their counts not yet committed
        self.replayed = self.replay_orphans()
        self._stop = threading.Event()
        self._period = flush_period_s
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._run, name="usage-ledger", daemon=True)
            self._thread.start()

    def record(self, key_id: str, tenant: str, adapter: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one completed request (cheap: no I/O)."""
        minute = int(self._clock()) // BUCKET_S * BUCKET_S
        with self._pending_lock:
            self._journal.append(Entry(minute, key_id, tenant, adapter, prompt_tokens, completion_tokens))
            counts = self._pending.setdefault((minute, key_id, tenant, adapter), [0, 0, 0])
            counts[0] += 1
            counts[1] += prompt_tokens
            counts[2] += completion_tokens

    def flush(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
            if not pending and not self._unapplied:
                return
            # A fresh journal for what comes next; the old one holds exactly `pending`.
            rotated = self._journal
            self._unapplied.append(rotated)
            self._journal = JournalFile.create(self.journal_dir)
            journals = list(self._unapplied)
        rotated.sync()  # outside the lock: requests keep recording meanwhile
        rows = [(*key, *counts) for key, counts in pending.items()]
        try:
            self._commit(rows, [j.name for j in journals])
        except sqlite3.Error:
            with self._pending_lock:  # keep the counts (and their journals) for the next try
                for key, counts in pending.items():
                    mine = self._pending.setdefault(key, [0, 0, 0])
                    for i in range(3):
                        mine[i] += counts[i]
            raise
        with self._pending_lock:
            self._unapplied = [j for j in self._unapplied if j not in journals]
        for journal in journals:
            journal.close_and_delete()
        self._forget_applied([j.name for j in journals])

    def _commit(self, rows: list[tuple], journal_names: list[str]) -> None:
        """The rows and the names of the journals they came from, in one transaction."""
        with self._db_lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(_UPSERT, rows)
                self._db.executemany("INSERT OR IGNORE INTO applied_journals (name) VALUES (?)", [(n,) for n in journal_names])
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK") if self._db.in_transaction else None
                raise

    def _forget_applied(self, names: list[str]) -> None:
        """The journals are deleted: their names are no longer needed to prevent a replay."""
        with self._db_lock:
            self._db.executemany("DELETE FROM applied_journals WHERE name = ?", [(n,) for n in names])

    def replay_orphans(self) -> int:
        """Apply the journals of ledgers whose process died (exactly once); returns the
        number of requests recovered."""
        recovered = 0
        for path, fd in claim_orphans(self.journal_dir):
            try:
                with self._db_lock:
                    applied = self._db.execute("SELECT 1 FROM applied_journals WHERE name = ?", (path.name,)).fetchone()
                if not applied:
                    entries = read_entries(path)
                    totals: dict[tuple, list[int]] = {}
                    for e in entries:
                        counts = totals.setdefault(e.key(), [0, 0, 0])
                        counts[0] += 1
                        counts[1] += e.prompt_tokens
                        counts[2] += e.completion_tokens
                    self._commit([(*k, *c) for k, c in totals.items()], [path.name])
                    recovered += len(entries)
                    logger.warning("usage ledger: applied %d request(s) from the journal of a process that died (%s)",
                                   len(entries), path.name)
                path.unlink(missing_ok=True)
                self._forget_applied([path.name])
            finally:
                os.close(fd)
        return recovered

    def _run(self) -> None:
        periods = 0
        while not self._stop.wait(self._period):
            periods += 1
            try:
                self.flush()
                if periods % ORPHAN_SCAN_PERIODS == 0:  # a sibling process that died (no restart here)
                    self.replay_orphans()
            except sqlite3.Error as err:
                logger.error("usage ledger write failed, retrying next period: %s", err)
                if self._on_write_failure is not None:
                    self._on_write_failure()

    def close(self) -> None:
        """Stop the writer and write everything recorded so far."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.flush()
        finally:
            with self._pending_lock:
                self._journal.close_and_delete()  # empty: everything recorded was just committed
            with self._db_lock:
                self._db.close()

    def rows(
        self,
        *,
        key_id: str | None = None,
        tenant: str | None = None,
        adapter: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> list[UsageRow]:
        """Usage per (key, tenant, adapter), summed over [start, end) in unix seconds, to
        the minute: the minute holding `start` counts, minutes from `end` on do not."""
        where, args = _filters(key_id=key_id, tenant=tenant, adapter=adapter, start=start, end=end)
        sql = (
            "SELECT key_id, tenant, adapter, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens) FROM usage"
            f"{where} GROUP BY key_id, tenant, adapter ORDER BY tenant, key_id, adapter"
        )
        return [UsageRow(*r) for r in self._query(sql, args)]

    def adapter_totals(
        self, adapters: Iterable[str], *, exclude_tenant: str, start: float | None = None, end: float | None = None
    ) -> list[AdapterTotal]:
        """Per adapter in `adapters`, the usage of every tenant but `exclude_tenant`, summed."""
        names = sorted(set(adapters))
        if not names:
            return []
        where, args = _filters(start=start, end=end)
        where += (" AND " if where else " WHERE ") + f"tenant != ? AND adapter IN ({','.join('?' * len(names))})"
        sql = (
            "SELECT adapter, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens) FROM usage"
            f"{where} GROUP BY adapter ORDER BY adapter"
        )
        return [AdapterTotal(*r) for r in self._query(sql, [*args, exclude_tenant, *names])]

    def _query(self, sql: str, args: list) -> list[tuple]:
        self.flush()
        with self._db_lock:
            return self._db.execute(sql, args).fetchall()


def _filters(**given) -> tuple[str, list]:
    clauses, args = [], []
    for column in ("key_id", "tenant", "adapter"):
        if given.get(column) is not None:
            clauses.append(f"{column} = ?")
            args.append(given[column])
    if given.get("start") is not None:
        clauses.append("minute >= ?")
        args.append(int(given["start"]) // BUCKET_S * BUCKET_S)
    if given.get("end") is not None:
        clauses.append("minute < ?")
        args.append(given["end"])
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
