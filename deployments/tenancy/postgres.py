"""PostgreSQL for the state ingress replicas share: connections, the schema, and errors
that never reveal the DSN.

The DSN (`postgresql://user:password@host:5432/db?sslmode=require`) is read from the
environment variable named by `server.usage.postgres_dsn_env` (on Kubernetes, filled
from a Secret), so it is never part of the config, never in a config dump, and never
logged: errors are reported by `describe`, which drops it (and its password) from
libpq's message.

Every connection is in autocommit mode (a transaction is explicit where one is needed),
with bounded waits: `connect_timeout`, a server-side `statement_timeout`, and TCP
keepalives plus `tcp_user_timeout`, so a database that vanishes from the network is
noticed in seconds instead of the kernel's minutes.
"""

from __future__ import annotations

import hashlib
import math
import os

import psycopg
from psycopg.conninfo import conninfo_to_dict

SCHEMA_LOCK_ID = 0x6C66_7573  # pg_advisory_xact_lock key: replicas starting together create the tables once

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS lorafleet_usage (
        minute BIGINT NOT NULL,
        key_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        adapter TEXT NOT NULL,
        requests BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        PRIMARY KEY (minute, key_id, tenant, adapter)
    )
    """,
    "CREATE INDEX IF NOT EXISTS lorafleet_usage_by_tenant ON lorafleet_usage (tenant, minute)",
    "CREATE INDEX IF NOT EXISTS lorafleet_usage_by_adapter ON lorafleet_usage (adapter, minute)",
    """
    CREATE TABLE IF NOT EXISTS lorafleet_applied_journals (
        name TEXT PRIMARY KEY,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    # One row per (key, budget), rewritten on every request: a low fillfactor keeps the
    # updates HOT (in-page), so the table does not bloat between autovacuums.
    """
    CREATE TABLE IF NOT EXISTS lorafleet_rate_buckets (
        key_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        limit_value DOUBLE PRECISION NOT NULL,
        rate DOUBLE PRECISION NOT NULL,
        capacity DOUBLE PRECISION NOT NULL,
        level DOUBLE PRECISION NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        granted BOOLEAN NOT NULL,
        PRIMARY KEY (key_id, kind)
    ) WITH (fillfactor = 50)
    """,
)


class MissingDsn(ValueError):
    """The environment variable that should hold the DSN is unset or empty."""


def dsn_from_env(variable: str) -> str:
    dsn = os.environ.get(variable, "").strip()
    if not dsn:
        raise MissingDsn(
            f"server.usage.backend is postgres but the environment variable {variable} (server.usage.postgres_dsn_env) "
            "is unset or empty: set it to the database's DSN (postgresql://user:password@host:5432/db), e.g. from a Secret.")
    return dsn


def connect(dsn: str, *, timeout_s: float, purpose: str, durable: bool = True) -> psycopg.Connection:
    """A connection whose every wait is bounded by about `timeout_s` (connect: at least
    2 s, libpq's minimum). `durable` False: commits do not wait for the WAL to reach
    disk (`synchronous_commit=off`; still atomic and replicated, but a database crash
    may forget the last fraction of a second): for state that is soft anyway, such as
    rate-limit buckets. Raises psycopg.Error."""
    ms = max(1, int(timeout_s * 1000))
    options = f"-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={max(ms, 10_000)}"
    if not durable:
        options += " -c synchronous_commit=off"
    return psycopg.connect(
        dsn,
        autocommit=True,
        application_name=f"lorafleet-{purpose}",
        connect_timeout=max(2, math.ceil(timeout_s)),
        options=options,
        keepalives=1,
        keepalives_idle=max(1, math.ceil(timeout_s)),
        keepalives_interval=1,
        keepalives_count=3,
        tcp_user_timeout=ms,
    )


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create lorafleet's tables if missing (idempotent; serialized across replicas)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
        for statement in SCHEMA:
            conn.execute(statement)


def database_id(dsn: str) -> str:
    """A short, stable name for the database a DSN points to (user, host, port, database;
    never the password): journals meant for one database are never applied to another."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        parts = {}
    ident = "{user}@{host}:{port}/{dbname}".format(**{k: parts.get(k, "") for k in ("user", "host", "port", "dbname")})
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def describe(err: BaseException, dsn: str) -> str:
    """`err` as one line fit for a log or a client: the first line of libpq's message,
    with the DSN and any password in it removed."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    secrets = [dsn]
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if password:
        secrets.append(str(password))
    for secret in secrets:
        text = text.replace(secret, "***")
    return f"{type(err).__name__}: {text}"
