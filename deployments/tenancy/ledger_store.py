"""Where the usage ledger's rows live: the interface both backends implement, and the
queries they share.

One row per (minute, key, tenant, adapter) with requests, prompt and completion tokens.
A backend applies one *batch* at a time (the counts of one write-ahead journal file,
deployments.tenancy.journal) in one transaction together with the journal's name;
a batch whose name is already recorded is skipped. That makes every write idempotent:
a commit whose answer was lost (the connection died after the server committed), a
retry after an outage, and the replay of a dead process's journal all count each
request once. Backends: `ledger_sqlite.SqliteLedgerStore` (embedded, one node) and
`ledger_postgres.PostgresLedgerStore` (shared by every ingress replica).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from deployments.errors import StoreUnavailable

BUCKET_S = 60  # rows are per minute

Row = tuple[int, str, str, str, int, int, int]  # minute, key_id, tenant, adapter, requests, prompt, completion


class LedgerUnavailable(StoreUnavailable):
    """The ledger's database refused or failed a read or write; recorded usage is kept
    (journal + memory) and written at a later try."""

    def __init__(self, message: str):
        super().__init__(f"The usage ledger's database is unavailable: {message}", retry_after_s=5)


class LedgerStore(Protocol):
    table: str  # the usage table's name, for rows_query / adapter_totals_query
    mark: str  # the driver's parameter placeholder

    def apply(self, journal: str, rows: Sequence[Row]) -> bool:
        """In one transaction: record `journal` as applied and add `rows`; if `journal` is
        already recorded, change nothing and return False. Raises LedgerUnavailable."""

    def is_applied(self, journal: str) -> bool:
        """Whether `journal` is recorded as applied. Raises LedgerUnavailable."""

    def forget(self, journals: Sequence[str]) -> None:
        """Drop the names of journals whose files are deleted (nothing can replay them)."""

    def select(self, sql: str, args: Sequence) -> list[tuple]:
        """Run a query built by `rows_query` / `adapter_totals_query` for this backend."""

    def close(self) -> None: ...


def _sum(column: str) -> str:
    # PostgreSQL's SUM of a bigint is a numeric: cast back (SQLite accepts the same cast).
    return f"CAST(SUM({column}) AS BIGINT)"


_SUMS = ", ".join(_sum(c) for c in ("requests", "prompt_tokens", "completion_tokens"))


def _filters(mark: str, **given) -> tuple[list[str], list]:
    clauses, args = [], []
    for column in ("key_id", "tenant", "adapter"):
        if given.get(column) is not None:
            clauses.append(f"{column} = {mark}")
            args.append(given[column])
    if given.get("start") is not None:
        clauses.append(f"minute >= {mark}")
        args.append(int(given["start"]) // BUCKET_S * BUCKET_S)
    if given.get("end") is not None:
        clauses.append(f"minute < {mark}")
        args.append(given["end"])
    return clauses, args


def _where(clauses: list[str]) -> str:
    return " WHERE " + " AND ".join(clauses) if clauses else ""


def rows_query(table: str, mark: str, **filters) -> tuple[str, list]:
    """Usage per (key, tenant, adapter) summed over the filtered minutes; `mark` is the
    backend's parameter placeholder (`?` or `%s`)."""
    clauses, args = _filters(mark, **filters)
    sql = (f"SELECT key_id, tenant, adapter, {_SUMS} FROM {table}{_where(clauses)} "
           "GROUP BY key_id, tenant, adapter ORDER BY tenant, key_id, adapter")
    return sql, args


def adapter_totals_query(table: str, mark: str, adapters: Sequence[str], *, exclude_tenant: str,
                         start: float | None, end: float | None) -> tuple[str, list]:
    """Per adapter in `adapters`, every tenant's usage but `exclude_tenant`'s, summed."""
    clauses, args = _filters(mark, start=start, end=end)
    clauses += [f"tenant != {mark}", f"adapter IN ({', '.join([mark] * len(adapters))})"]
    sql = f"SELECT adapter, {_SUMS} FROM {table}{_where(clauses)} GROUP BY adapter ORDER BY adapter"
    return sql, [*args, exclude_tenant, *adapters]
