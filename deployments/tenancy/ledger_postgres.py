"""The usage ledger in PostgreSQL, shared by every ingress replica on every node.

One connection per ledger, opened on first use and again after any error, so an ingress
starts and serves while the database is down and its ledger writes resume when the
database is back (the journal and the in-memory counts hold the usage meanwhile,
deployments.tenancy.ledger). A batch's rows and its journal's name are committed in one
transaction; rows are upserted in one statement, in key order, so two replicas writing
the same minute's rows lock them in the same order and do not deadlock (were they to, the
batch would simply be retried: it is applied by name).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import psycopg

from deployments.tenancy import postgres
from deployments.tenancy.ledger_store import LedgerUnavailable, Row

T = TypeVar("T")

# One statement for the whole batch (columns as arrays): a batch's keys are distinct, and
# unnest keeps their (sorted) order. ~4x the rows/s of one upsert per row.
_UPSERT = """
INSERT INTO lorafleet_usage AS u (minute, key_id, tenant, adapter, requests, prompt_tokens, completion_tokens)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[])
ON CONFLICT (minute, key_id, tenant, adapter) DO UPDATE SET
    requests = u.requests + excluded.requests,
    prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = u.completion_tokens + excluded.completion_tokens
"""


class PostgresLedgerStore:
    table = "lorafleet_usage"
    mark = "%s"

    def __init__(self, dsn: str, *, timeout_s: float = 10.0):
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._conn: psycopg.Connection | None = None
        self._schema_ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the DSN
        return "PostgresLedgerStore()"

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """`work` on the connection; a connection that had been idle and turns out dead
        (the server restarted since) is replaced and `work` tried once more: every
        operation here is idempotent (a batch is applied by its journal's name)."""
        with self._lock:
            while True:
                reused = self._conn is not None
                try:
                    if self._conn is None:
                        self._conn = postgres.connect(self._dsn, timeout_s=self._timeout_s, purpose="ledger")
                    if not self._schema_ready:
                        postgres.ensure_schema(self._conn)
                        self._schema_ready = True
                    return work(self._conn)
                except psycopg.Error as err:
                    self._drop()  # a fresh connection next time: this one may be broken or mid-transaction
                    if not (reused and isinstance(err, psycopg.OperationalError)):
                        raise LedgerUnavailable(postgres.describe(err, self._dsn)) from None

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def apply(self, journal: str, rows: Sequence[Row]) -> bool:
        def transaction(conn: psycopg.Connection) -> bool:
            with conn.transaction():
                new = conn.execute("INSERT INTO lorafleet_applied_journals (name) VALUES (%s) "
                                   "ON CONFLICT DO NOTHING RETURNING name", (journal,)).fetchone()
                if new is None:
                    return False
                if rows:
                    conn.execute(_UPSERT, [list(column) for column in zip(*sorted(rows))])
                return True

        return self._run(transaction)

    def is_applied(self, journal: str) -> bool:
        return bool(self.select("SELECT 1 FROM lorafleet_applied_journals WHERE name = %s", (journal,)))

    def forget(self, journals: Sequence[str]) -> None:
        self._run(lambda conn: conn.execute("DELETE FROM lorafleet_applied_journals WHERE name = ANY(%s)", (list(journals),)))

    def select(self, sql: str, args: Sequence) -> list[tuple]:
        return self._run(lambda conn: conn.execute(sql, list(args)).fetchall())

    def close(self) -> None:
        with self._lock:
            self._drop()
