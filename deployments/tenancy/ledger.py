"""The usage ledger: requests, prompt and generated tokens per key and adapter, durable.

Every completed request adds its engine-reported usage (the same numbers as the
response's `usage`) with `record`: a dict update under a lock, and one append to a
write-ahead journal (deployments.tenancy.journal). A background thread writes what
accumulated every `flush_period_s`, and `close` (the ingress's shutdown) writes the
rest. Queries flush first, so what `GET /v1/usage` answers is exact for this replica's
requests (another replica's are at most one of its flush periods behind).

Exactly once, whatever fails. A flush turns the current journal and its counts into a
*batch* and hands it to the backend (deployments.tenancy.ledger_store), which commits
the rows together with the journal's name, or nothing if the name is already there.
So a batch is never counted twice, even when the database committed but the answer
was lost; and a batch is never lost: until the commit is known, its journal stays on
disk and the batch stays in memory (the "batch in doubt"), retried every period.
While the database is down, requests keep being served and recorded: new usage goes
on accumulating in the current journal and in memory (one file, one dict; nothing is
rotated until the batch in doubt is written), and everything is written when the
database returns. A SIGKILLed process loses nothing either: its journal files are
applied by the next ledger that opens the same journal folder (a restarted or sibling
ingress replica on the node), by name, so exactly once.

Backends: SQLite (embedded, one node: `UsageLedger(path)`) and PostgreSQL (every
ingress replica on every node: `UsageLedger(store=PostgresLedgerStore(dsn),
journal_dir=...)`). Rows are per (minute, key, tenant, adapter): small (a busy key on
one adapter adds ~1,440 rows a day) and filterable by time to the minute.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from deployments.tenancy.journal import Entry, JournalFile, claim_orphans, read_entries
from deployments.tenancy.ledger_sqlite import SqliteLedgerStore
from deployments.tenancy.ledger_store import BUCKET_S, LedgerStore, LedgerUnavailable, adapter_totals_query, rows_query

logger = logging.getLogger(__name__)

__all__ = ["AdapterTotal", "BUCKET_S", "LedgerUnavailable", "UsageLedger", "UsageRow"]

ORPHAN_SCAN_PERIODS = 20  # flush periods between looks for journals of processes that died

Key = tuple[int, str, str, str]  # minute, key_id, tenant, adapter


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


@dataclass
class _Batch:
    """One journal file and exactly the counts it holds."""

    journal: JournalFile
    counts: dict[Key, list[int]]

    def rows(self) -> list[tuple]:
        return [(*key, *counts) for key, counts in self.counts.items()]


def _add(totals: dict[Key, list[int]], key: Key, prompt_tokens: int, completion_tokens: int, requests: int = 1) -> None:
    counts = totals.setdefault(key, [0, 0, 0])
    counts[0] += requests
    counts[1] += prompt_tokens
    counts[2] += completion_tokens


class UsageLedger:
    def __init__(
        self,
        path: str | Path | None = None,
        *,
        store: LedgerStore | None = None,
        journal_dir: str | Path | None = None,
        flush_period_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        background: bool = True,
        on_write_failure: Callable[[], None] | None = None,
    ):
        """`UsageLedger(path)`: SQLite at `path`, its journal in `<path>.journal/`.
        `UsageLedger(store=..., journal_dir=...)`: any backend; the journal folder must be
        on the node's own disk (every ingress replica of the node may share it)."""
        if store is None:
            if path is None:
                raise TypeError("UsageLedger needs an SQLite path or a store")
            path = Path(path)
            store = SqliteLedgerStore(path)
            journal_dir = journal_dir or path.with_name(path.name + ".journal")
        if journal_dir is None:
            raise TypeError("UsageLedger(store=...) needs journal_dir")
        self.store = store
        self.journal_dir = Path(journal_dir)
        self._clock = clock
        self._on_write_failure = on_write_failure
        self._pending: dict[Key, list[int]] = {}  # exactly what the current journal holds
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time (the writer thread, a query)
        self._journal = JournalFile.create(self.journal_dir)
        self._in_doubt: _Batch | None = None  # handed to the store, commit not confirmed yet
        self._unforgotten: list[str] = []  # applied journal names whose forget failed
        self.replayed = 0  # requests recovered from dead processes' journals
        self.healthy = True  # the last write reached the database
        self._replay_due = False
        self._try_replay()
        self._stop = threading.Event()
        self._period = flush_period_s
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._run, name="usage-ledger", daemon=True)
            self._thread.start()

    def record(self, key_id: str, tenant: str, adapter: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one completed request (cheap: one append to the journal, no database)."""
        minute = int(self._clock()) // BUCKET_S * BUCKET_S
        with self._pending_lock:
            self._journal.append(Entry(minute, key_id, tenant, adapter, prompt_tokens, completion_tokens))
            _add(self._pending, (minute, key_id, tenant, adapter), prompt_tokens, completion_tokens)

    def flush(self) -> None:
        """Write everything recorded so far; raises LedgerUnavailable (keeping it all for
        the next try) if the database cannot take it."""
        with self._flush_lock:
            # Twice at most: the batch in doubt from an earlier failure, then what was
            # recorded since; nothing recorded before this call is left behind.
            for _ in range(2):
                batch = self._batch_to_write()
                if batch is None:
                    break
                batch.journal.sync()  # outside the pending lock: requests keep recording meanwhile
                try:
                    self.store.apply(batch.journal.name, batch.rows())
                except LedgerUnavailable:
                    self.healthy = False
                    raise
                self.healthy = True
                with self._pending_lock:
                    self._in_doubt = None
                batch.journal.close_and_delete()
                self._forget([batch.journal.name])

    def _batch_to_write(self) -> _Batch | None:
        """The batch in doubt, else the current journal's counts (rotated to a fresh journal)."""
        with self._pending_lock:
            if self._in_doubt is None and self._pending:
                self._in_doubt = _Batch(self._journal, self._pending)
                self._journal = JournalFile.create(self.journal_dir)
                self._pending = {}
            return self._in_doubt

    def _forget(self, names: list[str]) -> None:
        """The journals are deleted: their names no longer need to block a replay. A
        failure only leaves a name behind (retried later); it never fails the flush."""
        names = self._unforgotten + names
        try:
            self.store.forget(names)
            self._unforgotten = []
        except LedgerUnavailable:
            self._unforgotten = names

    def replay_orphans(self) -> int:
        """Apply the journals of ledgers whose process died (exactly once); returns the
        number of requests recovered. Raises LedgerUnavailable, leaving the rest for later."""
        recovered = 0
        claimed = claim_orphans(self.journal_dir)
        try:
            while claimed:
                path, fd = claimed[0]
                entries = read_entries(path)
                totals: dict[Key, list[int]] = {}
                for e in entries:
                    _add(totals, e.key(), e.prompt_tokens, e.completion_tokens)
                if entries and self.store.apply(path.name, [(*k, *c) for k, c in totals.items()]):
                    recovered += len(entries)
                    logger.warning("usage ledger: applied %d request(s) from the journal of a process that died (%s)",
                                   len(entries), path.name)
                path.unlink(missing_ok=True)
                claimed.pop(0)
                os.close(fd)
                self._forget([path.name])
        finally:
            for _, fd in claimed:
                os.close(fd)  # not applied: the next scan claims them again
            self.replayed += recovered
        return recovered

    def _try_replay(self) -> None:
        try:
            self.replay_orphans()
            self._replay_due = False
        except LedgerUnavailable as err:
            self._replay_due = True
            logger.error("usage ledger: cannot apply dead processes' journals yet (%s); retrying", err)

    def _run(self) -> None:
        periods = 0
        while not self._stop.wait(self._period):
            periods += 1
            try:
                self.flush()
            except LedgerUnavailable as err:
                logger.error("usage ledger write failed, usage kept and retried next period: %s", err)
                if self._on_write_failure is not None:
                    self._on_write_failure()
                continue
            if self._replay_due or periods % ORPHAN_SCAN_PERIODS == 0:  # a sibling process that died
                self._try_replay()

    def close(self) -> None:
        """Stop the writer and write everything recorded so far. If the database cannot
        take it, the journals stay on disk for the next ledger on this node to apply."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.flush()
        except LedgerUnavailable as err:
            logger.error("usage ledger: closing with unwritten usage (%s); its journal stays in %s for the next "
                         "ledger on this node", err, self.journal_dir)
            with self._pending_lock:
                if self._in_doubt is not None:
                    self._in_doubt.journal.close()
                self._journal.close()
        else:
            with self._pending_lock:
                if self._pending:  # recorded while the last flush ran: left for the next ledger
                    self._journal.close()
                else:
                    self._journal.close_and_delete()
        finally:
            self.store.close()

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
        self.flush()
        sql, args = rows_query(self.store.table, self.store.mark, key_id=key_id, tenant=tenant, adapter=adapter,
                               start=start, end=end)
        return [UsageRow(*r) for r in self.store.select(sql, args)]

    def adapter_totals(
        self, adapters: Iterable[str], *, exclude_tenant: str, start: float | None = None, end: float | None = None
    ) -> list[AdapterTotal]:
        """Per adapter in `adapters`, the usage of every tenant but `exclude_tenant`, summed."""
        names = sorted(set(adapters))
        if not names:
            return []
        self.flush()
        sql, args = adapter_totals_query(self.store.table, self.store.mark, names, exclude_tenant=exclude_tenant,
                                         start=start, end=end)
        return [AdapterTotal(*r) for r in self.store.select(sql, args)]
