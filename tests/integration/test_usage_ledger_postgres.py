"""The usage ledger on a real PostgreSQL (the session's throwaway server, tests/postgres_server.py):
exact counts from concurrent writers, a SIGKILLed writer's journal applied once, a commit
whose answer was lost not counted twice, a database restart mid-load, an ingress that
starts while the database is down, and a DSN that never leaks. No Ray: these are the
ledger's own guarantees; tests/fast/test_postgres_ingress.py runs them through two
ingress replicas."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deployments.tenancy.ledger import UsageLedger
from deployments.tenancy.ledger_postgres import PostgresLedgerStore
from deployments.tenancy.ledger_store import LedgerUnavailable
from deployments.tenancy.usage_report import usage_report
from deployments.tenancy.keys import Principal

REPO = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0


def _ledger(dsn: str, journal: Path, **kwargs) -> UsageLedger:
    kwargs.setdefault("background", False)
    return UsageLedger(store=PostgresLedgerStore(dsn), journal_dir=journal, **kwargs)


def _totals(dsn: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    """What the database holds, read by a fresh store (no ledger's memory involved)."""
    store = PostgresLedgerStore(dsn)
    try:
        rows = store.select("SELECT key_id, adapter, CAST(SUM(requests) AS BIGINT), CAST(SUM(prompt_tokens) AS BIGINT), "
                            "CAST(SUM(completion_tokens) AS BIGINT) FROM lorafleet_usage GROUP BY key_id, adapter", [])
    finally:
        store.close()
    return {(k, a): (r, p, c) for k, a, r, p, c in rows}


def _wait_until(condition, timeout_s: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


# ---- two writers at once -----------------------------------------------------------------

_WRITER = """
import os, sys, time
from deployments.tenancy.ledger import UsageLedger
from deployments.tenancy.ledger_postgres import PostgresLedgerStore
dsn, journal, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ledger = UsageLedger(store=PostgresLedgerStore(dsn), journal_dir=journal, flush_period_s=0.005)
while not os.path.exists(go):  # both writers start together
    time.sleep(0.001)
for i in range(n):
    ledger.record(f"k{i % 3}", "acme", ("poet", "haiku")[i % 2], 10, i % 7)
    if i % 25 == 0:
        time.sleep(0.001)  # many small batches, interleaved with the other writer's
ledger.close()
"""


def _expected(n: int, writers: int) -> dict[tuple[str, str], tuple[int, int, int]]:
    expected: dict[tuple[str, str], list[int]] = {}
    for i in range(n):
        counts = expected.setdefault((f"k{i % 3}", ("poet", "haiku")[i % 2]), [0, 0, 0])
        counts[0] += writers
        counts[1] += 10 * writers
        counts[2] += (i % 7) * writers
    return {k: tuple(v) for k, v in expected.items()}


def test_two_ledger_processes_writing_the_same_rows_at_once_count_every_request_exactly(postgres_dsn, tmp_path):
    """Two ingress replicas on two nodes (own journal folders), upserting the same
    minute/key/adapter rows in ~100 interleaved transactions each."""
    n = 3000
    go = tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, postgres_dsn, str(tmp_path / f"node{w}"), str(n), str(go)],
                                cwd=REPO) for w in range(2)]
    time.sleep(2.0)  # both imported and connected
    go.touch()
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    assert _totals(postgres_dsn) == _expected(n, writers=2)


# ---- a SIGKILLed writer ----------------------------------------------------------------

_KILLED = """
import os, signal, sys
from deployments.tenancy.ledger import UsageLedger
from deployments.tenancy.ledger_postgres import PostgresLedgerStore
ledger = UsageLedger(store=PostgresLedgerStore(sys.argv[1]), journal_dir=sys.argv[2], flush_period_s=3600)
for i in range(30):
    ledger.record("k1", "acme", "poet", 10, i)
ledger.flush()  # these 30 are in the database
for i in range(30, 50):
    ledger.record("k1", "acme", "poet", 10, i)  # these 20 only in the journal
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_usage_of_a_sigkilled_process_is_applied_once_by_the_next_ledger_on_its_node(postgres_dsn, tmp_path):
    journal = tmp_path / "journal"
    done = subprocess.run([sys.executable, "-c", _KILLED, postgres_dsn, str(journal)], cwd=REPO)
    assert done.returncode == -9
    assert _totals(postgres_dsn)[("k1", "poet")][0] == 30
    ledger = _ledger(postgres_dsn, journal)
    assert ledger.replayed == 20
    ledger.close()
    again = _ledger(postgres_dsn, journal)
    assert again.replayed == 0
    again.close()
    assert _totals(postgres_dsn) == {("k1", "poet"): (50, 500, sum(range(50)))}


class _LosesTheFirstAnswer:
    """A real store whose first commit succeeds on the server while the client hears a
    failure: a connection dropped right after COMMIT."""

    def __init__(self, store: PostgresLedgerStore):
        self._store = store
        self.lost = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def apply(self, journal, rows):
        applied = self._store.apply(journal, rows)
        if not self.lost:
            self.lost += 1
            raise LedgerUnavailable("server closed the connection unexpectedly")
        return applied


def test_a_batch_whose_commit_answer_was_lost_is_not_counted_twice_on_retry(postgres_dsn, tmp_path):
    store = _LosesTheFirstAnswer(PostgresLedgerStore(postgres_dsn))
    ledger = UsageLedger(store=store, journal_dir=tmp_path / "j", background=False)
    for _ in range(5):
        ledger.record("k1", "acme", "poet", 1, 1)
    with pytest.raises(LedgerUnavailable):
        ledger.flush()  # committed, but the ledger cannot know
    for _ in range(3):
        ledger.record("k1", "acme", "poet", 1, 1)
    ledger.flush()  # the batch in doubt again (skipped by name), then the 3 new ones
    ledger.close()
    assert store.lost == 1
    assert _totals(postgres_dsn) == {("k1", "poet"): (8, 8, 8)}
    assert not list((tmp_path / "j").iterdir())  # every journal applied and deleted


# ---- the database goes away ----------------------------------------------------------------

def test_a_database_restart_mid_load_loses_and_doubles_nothing(postgres_server, postgres_dsn, tmp_path):
    failures = []
    ledger = _ledger(postgres_dsn, tmp_path / "j", background=True, flush_period_s=0.02,
                     on_write_failure=lambda: failures.append(1))
    stop = threading.Event()
    recorded = [0]

    def load():
        while not stop.is_set():
            ledger.record("k1", "acme", "poet", 3, 5)
            recorded[0] += 1
            time.sleep(0.0005)

    writer = threading.Thread(target=load)
    writer.start()
    try:
        time.sleep(0.5)
        postgres_server.stop("immediate")  # a crash: open transactions die mid-flight
        try:
            _wait_until(lambda: not ledger.healthy and len(failures) >= 3, what="the ledger to notice the outage")
            during = recorded[0]
            time.sleep(0.5)
            assert recorded[0] > during  # recording never waited for the database
        finally:
            postgres_server.start_again()
        _wait_until(lambda: ledger.healthy, what="the ledger to write again")
        time.sleep(0.3)
    finally:
        stop.set()
        writer.join()
    ledger.close()
    n = recorded[0]
    assert _totals(postgres_dsn) == {("k1", "poet"): (n, 3 * n, 5 * n)}


def test_a_ledger_opened_while_the_database_is_down_serves_and_writes_when_it_returns(postgres_server, postgres_dsn, tmp_path):
    postgres_server.stop()
    try:
        ledger = _ledger(postgres_dsn, tmp_path / "j")  # an ingress starting during the outage
        for _ in range(7):
            ledger.record("k1", "acme", "poet", 2, 3)
        with pytest.raises(LedgerUnavailable) as err:
            ledger.rows()  # GET /v1/usage: 503 with Retry-After, not a hang
        assert err.value.retry_after_s > 0
    finally:
        postgres_server.start_again()
    assert [(r.requests, r.prompt_tokens, r.completion_tokens) for r in ledger.rows()] == [(7, 14, 21)]
    ledger.close()


def test_the_dsn_and_its_password_never_reach_errors_or_logs(tmp_path, caplog):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    dsn = f"postgresql://lorafleet:pw-s3cr3t-xyz@127.0.0.1:{closed_port}/usage"
    caplog.set_level(logging.DEBUG)
    ledger = UsageLedger(store=PostgresLedgerStore(dsn, timeout_s=2), journal_dir=tmp_path / "j",
                         flush_period_s=0.05)
    ledger.record("k1", "acme", "poet", 1, 1)
    with pytest.raises(LedgerUnavailable) as err:
        ledger.flush()
    time.sleep(0.2)  # the background writer logs its failures too
    ledger.close()
    assert "Connection refused" in str(err.value) or "connection" in str(err.value).lower()
    for text in (str(err.value), caplog.text, repr(ledger.store)):
        assert "pw-s3cr3t-xyz" not in text and dsn not in text
    assert list((tmp_path / "j").iterdir())  # the unwritten usage stays in its journal


# ---- queries -------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def _seed(ledger: UsageLedger, clock: Clock) -> None:
    clock.now = T0
    ledger.record("acme-1", "acme", "acme-private", 10, 1)
    ledger.record("acme-2", "acme", "poet", 20, 2)
    clock.now = T0 + 90
    ledger.record("beta-1", "beta", "acme-public", 30, 3)
    ledger.record("beta-1", "beta", "acme-public", 40, 4)
    clock.now = T0 + 200
    ledger.record("gamma-1", "gamma", "acme-public", 50, 5)
    ledger.record("gamma-1", "gamma", "poet", 60, 6)


def test_postgres_answers_every_usage_query_exactly_as_sqlite_does(postgres_dsn, tmp_path):
    clock = Clock()
    sqlite = UsageLedger(tmp_path / "u.sqlite", clock=clock, background=False)
    pg = _ledger(postgres_dsn, tmp_path / "j", clock=clock)
    _seed(sqlite, clock)
    _seed(pg, clock)
    acme = Principal("acme-1", "acme", "tenant")
    admin = Principal("ops", "ops", "admin")
    for principal, query in [
        (admin, {}), (admin, {"tenant": "gamma", "adapter": "poet"}), (admin, {"key_id": "beta-1"}),
        (admin, {"start": T0 + 60}), (admin, {"start": T0 + 61, "end": T0 + 180}), (admin, {"end": T0 + 60}),
        (acme, {}), (acme, {"start": T0 + 120}), (acme, {"adapter": "acme-public"}),
    ]:
        owned = ["acme-private", "acme-public"]
        assert usage_report(principal, pg, owned, **query) == usage_report(principal, sqlite, owned, **query), query
    assert usage_report(admin, pg, [])["data"]  # not two empty answers
    sqlite.close()
    pg.close()
