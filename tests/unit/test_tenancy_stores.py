"""Choosing the ledger and the limiter from the config (deployments.tenancy.stores), and
keeping the PostgreSQL DSN out of the config and of error messages. No database: the
PostgreSQL parts connect lazily; tests/integration/test_*_postgres.py run them for real."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deployments.config import ConfigError, parse_config
from deployments.tenancy import postgres
from deployments.tenancy.ledger_postgres import PostgresLedgerStore
from deployments.tenancy.ledger_sqlite import SqliteLedgerStore
from deployments.tenancy.ratelimit import KeyRateLimiter
from deployments.tenancy.ratelimit_shared import SharedRateLimiter
from deployments.tenancy.stores import open_ledger, open_limiter

DSN = "postgresql://lorafleet:hunter2-secret@127.0.0.1:1/usage"


def _config(tmp_path, usage: dict | None = None, limits: dict | None = None, ingress_replicas: int = 2):
    return parse_config({
        "model": {"source": "/models/base", "served_name": "base"},
        "adapters": {"uri": str(tmp_path / "adapters"), "cache_dir": str(tmp_path / "cache")},
        "deployment": {"ingress_replicas": ingress_replicas},
        "server": {"usage": usage or {}, "limits": limits or {}},
    })


def _store(tmp_path):
    """What the ledger reads of an adapter store: its local root and node-local cache."""
    return SimpleNamespace(root=tmp_path / "adapters", cache_dir=tmp_path / "cache")


def test_sqlite_is_the_default_with_in_memory_limits_split_across_ingress_replicas(tmp_path):
    config = _config(tmp_path)
    ledger = open_ledger(config, _store(tmp_path))
    limiter = open_limiter(config)
    try:
        assert isinstance(ledger.store, SqliteLedgerStore)
        assert ledger.store.path == tmp_path / "adapters" / ".lorafleet" / "usage.sqlite"
        assert ledger.journal_dir == tmp_path / "adapters" / ".lorafleet" / "usage.sqlite.journal"
        assert isinstance(limiter, KeyRateLimiter) and limiter.shares == 2
    finally:
        ledger.close()


def test_postgres_reads_the_dsn_from_the_named_variable_and_shares_the_limits(tmp_path, monkeypatch):
    monkeypatch.setenv("LEDGER_DSN", DSN)
    config = _config(tmp_path, usage={"backend": "postgres", "postgres_dsn_env": "LEDGER_DSN"},
                     limits={"when_store_down": "closed", "store_timeout_s": 0.2})
    ledger = open_ledger(config, _store(tmp_path))  # starts although nothing listens on port 1
    limiter = open_limiter(config)
    try:
        assert isinstance(ledger.store, PostgresLedgerStore)
        # node-local, one folder per database (never the password in its name)
        assert ledger.journal_dir.parent == tmp_path / "cache" / "usage-journal"
        assert ledger.journal_dir.name == postgres.database_id(DSN.replace("hunter2-secret", "other"))
        assert ledger.journal_dir.name != postgres.database_id(DSN.replace("/usage", "/billing"))
        assert isinstance(limiter, SharedRateLimiter)
        assert (limiter.when_down, limiter.timeout_s, limiter.fallback.shares) == ("closed", 0.2, 2)
    finally:
        ledger.close()
        limiter.close()
    dumped = repr(config.model_dump()) + config.model_dump_json() + repr(ledger.store) + repr(limiter.buckets)
    assert "hunter2" not in dumped and "127.0.0.1:1" not in dumped


def test_a_missing_dsn_variable_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("LORAFLEET_USAGE_POSTGRES_DSN", raising=False)
    config = _config(tmp_path, usage={"backend": "postgres"})
    with pytest.raises(postgres.MissingDsn, match="LORAFLEET_USAGE_POSTGRES_DSN"):
        open_ledger(config, _store(tmp_path))
    with pytest.raises(postgres.MissingDsn, match="server.usage.postgres_dsn_env"):
        open_limiter(config)


@pytest.mark.parametrize("usage, message", [
    ({"backend": "postgres", "ledger_path": "/data/usage.sqlite"}, "leave it unset with backend: postgres"),
    ({"backend": "mysql"}, "server.usage.backend"),
    ({"backend": "postgres", "postgres_dsn_env": "postgresql://u:p@h/db"}, "server.usage.postgres_dsn_env"),
])
def test_contradictory_or_malformed_ledger_settings_are_refused(tmp_path, usage, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, usage=usage)


def test_when_store_down_accepts_only_the_three_modes(tmp_path):
    with pytest.raises(ConfigError, match="server.limits.when_store_down"):
        _config(tmp_path, limits={"when_store_down": "fail"})


def test_error_descriptions_drop_the_dsn_and_its_password():
    err = RuntimeError(f'connection to "{DSN}" failed: password "hunter2-secret" rejected\nmore detail')
    described = postgres.describe(err, DSN)
    assert "hunter2" not in described and DSN not in described
    assert described.startswith("RuntimeError: connection to") and "more detail" not in described
