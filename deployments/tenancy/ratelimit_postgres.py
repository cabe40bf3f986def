"""Token buckets in PostgreSQL: one row per (key, budget), taken from in one statement.

`take` is a single `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`: PostgreSQL locks
the key's row for the statement, refills the bucket for the time since its last use,
takes the amount if it fits, and answers whether it did. No transaction spans two
round trips, so replicas never wait on each other longer than one row update, and a
request pays one round trip. Time is the database's own clock
(`clock_timestamp()`) unless a clock is injected (tests), so replicas whose clocks
disagree still share one timeline; a time earlier than the row's last use refills
nothing (`greatest`).

A bucket's limit is stored with it: when a key's limit changes (keys file reload) its
bucket starts full at the new size, as the in-memory buckets do.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import psycopg

from deployments.errors import StoreUnavailable
from deployments.tenancy import postgres

# The level available now: a changed limit starts full; otherwise refilled since `at`.
_AVAILABLE = ("CASE WHEN b.limit_value <> excluded.limit_value THEN excluded.capacity "
              "ELSE least(excluded.capacity, b.level + greatest(0, excluded.at - b.at) * excluded.rate) END")
_NOW = "COALESCE(%(now)s::double precision, extract(epoch FROM clock_timestamp()))"

TAKE = f"""
INSERT INTO lorafleet_rate_buckets AS b (key_id, kind, limit_value, rate, capacity, level, at, granted)
VALUES (%(key)s, %(kind)s, %(limit)s, %(rate)s, %(capacity)s, %(capacity)s - %(amount)s, {_NOW}, true)
ON CONFLICT (key_id, kind) DO UPDATE SET
    level = CASE WHEN {_AVAILABLE} >= %(amount)s THEN {_AVAILABLE} - %(amount)s ELSE {_AVAILABLE} END,
    granted = {_AVAILABLE} >= %(amount)s,
    at = greatest(b.at, excluded.at),
    limit_value = excluded.limit_value,
    rate = excluded.rate,
    capacity = excluded.capacity
RETURNING granted, level
"""

GIVE = f"""
UPDATE lorafleet_rate_buckets SET
    level = least(capacity, level + greatest(0, {_NOW} - at) * rate + %(amount)s),
    at = greatest(at, {_NOW})
WHERE key_id = %(key)s AND kind = 'tokens'
"""


class BucketsUnavailable(StoreUnavailable):
    def __init__(self, message: str):
        super().__init__(f"The shared rate limits' database is unavailable: {message}", retry_after_s=1)


class PostgresBuckets:
    """Thread-safe: each thread uses its own connection, opened on first use, after an
    error, and after `reset` (the database went away: every connection is stale)."""

    def __init__(self, dsn: str, *, timeout_s: float = 0.5):
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._all: list[psycopg.Connection] = []
        self._all_lock = threading.Lock()
        self._schema_ready = False
        self._generation = 0

    def __repr__(self) -> str:  # never the DSN
        return "PostgresBuckets()"

    def reset(self) -> None:
        """Make every thread reconnect before its next statement."""
        self._generation += 1

    def _connection(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", None) != self._generation:
            conn.close()
            conn = None
        if conn is None or conn.closed:
            self._local.generation = self._generation
            # Buckets are soft state: a database crash that forgets their last fraction of a
            # second refills a key by that much. Not waiting for the WAL flush on every
            # request is what keeps a take at one network round trip (bench/usage_postgres.py).
            conn = postgres.connect(self._dsn, timeout_s=self._timeout_s, purpose="rate-limits", durable=False)
            if not self._schema_ready:
                postgres.ensure_schema(conn)
                self._schema_ready = True
            self._local.conn = conn
            with self._all_lock:
                self._all = [c for c in self._all if not c.closed] + [conn]
        return conn

    def _failed(self, err: psycopg.Error) -> BucketsUnavailable:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        return BucketsUnavailable(postgres.describe(err, self._dsn))

    def take(self, key_id: str, kind: str, *, limit: float, rate: float, capacity: float, amount: float,
             now: float | None) -> float:
        """Take `amount` from the key's `kind` bucket and return 0, or take nothing and
        return the seconds until it would fit. Raises BucketsUnavailable."""
        params = {"key": key_id, "kind": kind, "limit": limit, "rate": rate, "capacity": capacity,
                  "amount": amount, "now": now}
        granted, level = self._execute_once_more_if_stale(TAKE, params).fetchone()
        return 0.0 if granted else (amount - level) / rate

    def _execute_once_more_if_stale(self, sql: str, params: dict) -> psycopg.Cursor:
        """A connection that sat idle may have been closed by the server (a restart, an
        idle timeout in a proxy): it is replaced and the statement sent once more. (Had
        the first one reached the database before the connection died, the key pays
        twice for this request: conservative, and only on a dying connection.)"""
        reused = getattr(self._local, "conn", None) is not None
        try:
            return self._connection().execute(sql, params)
        except psycopg.OperationalError as err:
            if not reused:
                raise self._failed(err) from None
            self._failed(err)
        except psycopg.Error as err:
            raise self._failed(err) from None
        try:
            return self._connection().execute(sql, params)
        except psycopg.Error as err:
            raise self._failed(err) from None

    def give(self, amounts: Sequence[tuple[str, float]], now: float | None) -> None:
        """Add each (key_id, tokens) to the key's token bucket (negative: charge), all or
        none, in key order (two replicas' gives never deadlock). Raises BucketsUnavailable."""
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(GIVE, [{"key": k, "amount": a, "now": now} for k, a in sorted(amounts)])
        except psycopg.Error as err:
            raise self._failed(err) from None

    def ping(self) -> None:
        self._execute_once_more_if_stale("SELECT 1", {}).fetchone()

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                try:
                    conn.close()
                except psycopg.Error:
                    pass
            self._all.clear()
