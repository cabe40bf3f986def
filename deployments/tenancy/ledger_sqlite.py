"""The usage ledger in an SQLite file (the embedded default, one node).

WAL mode, so readers do not block the writer. Several processes on one node may share
the file (SQLite locks it); a file on a network volume shared across nodes is not safe
for SQLite: with ingress replicas on several nodes use PostgreSQL
(`server.usage.backend: postgres`, deployments.tenancy.ledger_postgres).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from deployments.tenancy.ledger_store import LedgerUnavailable, Row

MARK = "?"
TABLE = "usage"

_SCHEMA = (
    """
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
    """,
    "CREATE TABLE IF NOT EXISTS applied_journals (name TEXT PRIMARY KEY)",
)
_UPSERT = """
INSERT INTO usage (minute, key_id, tenant, adapter, requests, prompt_tokens, completion_tokens)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (minute, key_id, tenant, adapter) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens
"""


class SqliteLedgerStore:
    table = TABLE
    mark = MARK

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._lock = threading.Lock()

    def apply(self, journal: str, rows: Sequence[Row]) -> bool:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                new = self._db.execute("INSERT OR IGNORE INTO applied_journals (name) VALUES (?)", (journal,)).rowcount
                if new:
                    self._db.executemany(_UPSERT, rows)
                self._db.execute("COMMIT")
                return bool(new)
            except sqlite3.Error as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise LedgerUnavailable(str(err)) from err

    def is_applied(self, journal: str) -> bool:
        return bool(self.select("SELECT 1 FROM applied_journals WHERE name = ?", (journal,)))

    def forget(self, journals: Sequence[str]) -> None:
        with self._lock:
            try:
                self._db.executemany("DELETE FROM applied_journals WHERE name = ?", [(n,) for n in journals])
            except sqlite3.Error as err:
                raise LedgerUnavailable(str(err)) from err

    def select(self, sql: str, args: Sequence) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, list(args)).fetchall()
            except sqlite3.Error as err:
                raise LedgerUnavailable(str(err)) from err

    def close(self) -> None:
        with self._lock:
            self._db.close()
