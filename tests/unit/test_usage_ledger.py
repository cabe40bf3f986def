"""The usage ledger: exact aggregation, durability across reopen, and who sees what."""

import sqlite3
from pathlib import Path

import pytest

from deployments.errors import PermissionDenied
from deployments.tenancy.keys import Principal
from deployments.tenancy.ledger import UsageLedger
from deployments.tenancy.usage_report import usage_report

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def _ledger(path, clock):
    return UsageLedger(path, clock=clock, background=False)


def test_records_sum_exactly_per_key_tenant_and_adapter(tmp_path, clock):
    ledger = _ledger(tmp_path / "u.sqlite", clock)
    for i in range(100):
        ledger.record("k1", "acme", "poet", 10 + i, 2 * i)
    ledger.record("k1", "acme", "base", 3, 4)
    ledger.record("k2", "beta", "poet", 5, 6)
    rows = {(r.key_id, r.adapter): r for r in ledger.rows()}
    assert rows["k1", "poet"].requests == 100
    assert rows["k1", "poet"].prompt_tokens == sum(10 + i for i in range(100))
    assert rows["k1", "poet"].completion_tokens == sum(2 * i for i in range(100))
    assert rows["k1", "base"].to_dict()["total_tokens"] == 7
    assert [r.tenant for r in ledger.rows(tenant="beta")] == ["beta"]
    assert {r.key_id for r in ledger.rows(adapter="poet")} == {"k1", "k2"}
    assert ledger.rows(key_id="nobody") == []


def test_usage_survives_close_and_reopen_and_adds_up(tmp_path, clock):
    path = tmp_path / "store" / ".lorafleet" / "usage.sqlite"  # parent folders are created
    ledger = _ledger(path, clock)
    ledger.record("k1", "acme", "poet", 7, 9)
    ledger.close()  # not flushed before: close writes it
    again = _ledger(path, clock)
    again.record("k1", "acme", "poet", 1, 1)
    [row] = again.rows()
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (2, 8, 10)
    again.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_background_writer_flushes_without_a_query(tmp_path, clock):
    ledger = UsageLedger(tmp_path / "u.sqlite", clock=clock, flush_period_s=0.05)
    ledger.record("k1", "acme", "poet", 1, 2)
    import time

    deadline = time.monotonic() + 10
    count = 0
    while time.monotonic() < deadline and not count:
        count = sqlite3.connect(tmp_path / "u.sqlite").execute("SELECT COUNT(*) FROM usage").fetchone()[0]
        time.sleep(0.02)
    ledger.close()
    assert count == 1


def test_time_filters_are_to_the_minute(tmp_path, clock):
    ledger = _ledger(tmp_path / "u.sqlite", clock)
    ledger.record("k1", "acme", "poet", 1, 0)
    clock.now = T0 + 60 + 30
    ledger.record("k1", "acme", "poet", 10, 0)
    clock.now = T0 + 180
    ledger.record("k1", "acme", "poet", 100, 0)

    def prompt(**window):
        return sum(r.prompt_tokens for r in ledger.rows(**window))

    assert prompt() == 111
    assert prompt(start=T0 + 60) == 110
    assert prompt(start=T0 + 61) == 110  # the minute holding `start` counts
    assert prompt(end=T0 + 60) == 1
    assert prompt(start=T0 + 60, end=T0 + 180) == 10


def _seed(ledger):
    ledger.record("acme-1", "acme", "acme-private", 10, 1)
    ledger.record("acme-2", "acme", "poet", 20, 2)
    ledger.record("beta-1", "beta", "acme-public", 30, 3)
    ledger.record("beta-1", "beta", "acme-public", 40, 4)
    ledger.record("gamma-1", "gamma", "acme-public", 50, 5)
    ledger.record("gamma-1", "gamma", "poet", 60, 6)


def test_admin_sees_everything_and_filters(tmp_path, clock):
    ledger = _ledger(tmp_path / "u.sqlite", clock)
    _seed(ledger)
    admin = Principal("ops", "ops", "admin")
    report = usage_report(admin, ledger, [])
    assert len(report["data"]) == 5 and "owned_adapters_other_tenants" not in report
    assert sum(r["requests"] for r in report["data"]) == 6
    assert [r["key_id"] for r in usage_report(admin, ledger, [], tenant="gamma", adapter="poet")["data"]] == ["gamma-1"]


def test_tenant_sees_its_own_rows_and_its_adapters_consumers_only_in_aggregate(tmp_path, clock):
    ledger = _ledger(tmp_path / "u.sqlite", clock)
    _seed(ledger)
    acme = Principal("acme-1", "acme", "tenant")
    report = usage_report(acme, ledger, ["acme-private", "acme-public"])
    assert {(r["key_id"], r["adapter"]) for r in report["data"]} == {("acme-1", "acme-private"), ("acme-2", "poet")}
    [others] = report["owned_adapters_other_tenants"]
    assert others == {"adapter": "acme-public", "requests": 3, "prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}
    text = repr(report)
    assert "beta" not in text and "gamma" not in text  # who used it stays hidden

    beta = Principal("beta-1", "beta", "tenant")
    report = usage_report(beta, ledger, [])
    assert {r["tenant"] for r in report["data"]} == {"beta"}
    assert report["owned_adapters_other_tenants"] == []
    with pytest.raises(PermissionDenied):
        usage_report(beta, ledger, [], tenant="acme")
    assert usage_report(beta, ledger, [], key_id="acme-1")["data"] == []  # another tenant's key: nothing


# ---- the write-ahead journal: a killed process loses no usage ----------------------------

_KILLED_WRITER = """
import os, signal, sys
from deployments.tenancy.ledger import UsageLedger
ledger = UsageLedger(sys.argv[1], flush_period_s=3600)  # it would write only at close
for i in range(int(sys.argv[2])):
    ledger.record("k1", "acme", "poet", 10, i)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush: the OOM killer's way
"""


def test_usage_recorded_by_a_sigkilled_process_is_applied_by_the_next_ledger(tmp_path):
    """Before the journal: everything since the last flush (up to flush_period_s) was lost."""
    import subprocess
    import sys

    path = tmp_path / "usage.sqlite"
    result = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path), "50"], cwd=Path(__file__).parents[2])
    assert result.returncode == -9
    ledger = UsageLedger(path, background=False)
    assert ledger.replayed == 50
    [row] = ledger.rows()
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (50, 500, sum(range(50)))
    ledger.close()
    again = UsageLedger(path, background=False)  # nothing is applied twice
    assert again.replayed == 0 and again.rows()[0].requests == 50
    again.close()


def test_a_journal_whose_batch_was_committed_before_the_crash_is_not_counted_twice(tmp_path):
    """The process died between committing a batch and deleting its journal."""
    import shutil

    path = tmp_path / "usage.sqlite"
    ledger = UsageLedger(path, background=False)
    ledger.record("k1", "acme", "poet", 1, 2)
    journal = ledger._journal.path
    kept = tmp_path / "kept.journal"
    shutil.copy(journal, kept)
    ledger.flush()  # committed, journal deleted, name forgotten
    ledger.close()
    shutil.copy(kept, journal)  # as if the delete never happened ...
    db = sqlite3.connect(path)
    db.execute("INSERT INTO applied_journals (name) VALUES (?)", (journal.name,))  # ... nor the forget
    db.commit()
    db.close()
    reopened = UsageLedger(path, background=False)
    assert reopened.replayed == 0 and reopened.rows()[0].requests == 1
    assert not journal.exists()
    reopened.close()


def test_a_live_ledgers_journal_is_not_taken_by_another(tmp_path):
    path = tmp_path / "usage.sqlite"
    first = UsageLedger(path, background=False)
    first.record("k1", "acme", "poet", 1, 1)
    second = UsageLedger(path, background=False)  # a sibling ingress replica on the same file
    assert second.replayed == 0
    first.close()
    assert second.rows()[0].requests == 1
    second.close()


# ---- a database that fails: batches in doubt, retried by name --------------------------------

class _Flaky:
    """A real SQLite store that fails on command: `down` refuses every write; `lose_next`
    commits the next batch but reports a failure (the answer lost with the connection)."""

    def __init__(self, path):
        from deployments.tenancy.ledger_sqlite import SqliteLedgerStore

        self._store = SqliteLedgerStore(path)
        self.down = False
        self.lose_next = False

    def __getattr__(self, name):
        return getattr(self._store, name)

    def apply(self, journal, rows):
        from deployments.tenancy.ledger_store import LedgerUnavailable

        if self.down:
            raise LedgerUnavailable("database unreachable")
        applied = self._store.apply(journal, rows)
        if self.lose_next:
            self.lose_next = False
            raise LedgerUnavailable("connection lost after COMMIT")
        return applied


def _sums(ledger):
    [row] = ledger.rows()
    return row.requests, row.prompt_tokens, row.completion_tokens


def test_a_batch_committed_whose_answer_was_lost_is_not_counted_again(tmp_path, clock):
    """Before batches were applied by name, the failed batch's counts went back into the
    pending counts and were committed a second time."""
    from deployments.tenancy.ledger_store import LedgerUnavailable

    store = _Flaky(tmp_path / "u.sqlite")
    ledger = UsageLedger(store=store, journal_dir=tmp_path / "j", clock=clock, background=False)
    ledger.record("k1", "acme", "poet", 1, 1)
    store.lose_next = True
    with pytest.raises(LedgerUnavailable):
        ledger.flush()
    ledger.record("k1", "acme", "poet", 1, 1)
    assert _sums(ledger) == (2, 2, 2)
    ledger.close()


def test_while_the_store_is_down_usage_accumulates_in_one_journal_and_is_written_once_when_it_returns(tmp_path, clock):
    from deployments.tenancy.ledger_store import LedgerUnavailable

    store = _Flaky(tmp_path / "u.sqlite")
    ledger = UsageLedger(store=store, journal_dir=tmp_path / "j", clock=clock, background=False)
    store.down = True
    for period in range(5):
        for _ in range(10):
            ledger.record("k1", "acme", "poet", 2, 3)
        with pytest.raises(LedgerUnavailable):
            ledger.flush()
        assert not ledger.healthy
    assert len(list((tmp_path / "j").iterdir())) == 2  # the batch in doubt and the growing current journal
    store.down = False
    assert _sums(ledger) == (50, 100, 150)
    assert ledger.healthy
    ledger.close()
    assert not list((tmp_path / "j").iterdir())


def test_closing_while_the_store_is_down_leaves_the_journals_for_the_next_ledger(tmp_path, clock):
    store = _Flaky(tmp_path / "u.sqlite")
    ledger = UsageLedger(store=store, journal_dir=tmp_path / "j", clock=clock, background=False)
    store.down = True
    for _ in range(4):
        ledger.record("k1", "acme", "poet", 1, 0)
    ledger.close()  # logs the failure; nothing deleted
    store.down = False
    reopened = UsageLedger(store=_Flaky(tmp_path / "u.sqlite"), journal_dir=tmp_path / "j", clock=clock, background=False)
    assert reopened.replayed == 4 and _sums(reopened) == (4, 4, 0)
    reopened.close()
