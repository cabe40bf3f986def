"""The tenancy's storage, chosen from the config: the usage ledger and the rate limiter.

    server.usage.backend: sqlite    an SQLite ledger file (one node) and in-memory rate
                                    limits, 1/ingress_replicas of each key's per replica
    server.usage.backend: postgres  the ledger and the per-key buckets in PostgreSQL,
                                    shared by every ingress replica: exact counts, exact
                                    limits; the DSN from the environment variable named
                                    by server.usage.postgres_dsn_env

The ingress's context (deployments.api.context) calls `open_ledger` and `open_limiter`
once per replica.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from adapters.store import AdapterStore
from deployments.config import LorafleetConfig
from deployments.tenancy import postgres
from deployments.tenancy.ledger import UsageLedger
from deployments.tenancy.ledger_postgres import PostgresLedgerStore
from deployments.tenancy.ratelimit import KeyRateLimiter, RateLimiter
from deployments.tenancy.ratelimit_postgres import PostgresBuckets
from deployments.tenancy.ratelimit_shared import SharedRateLimiter

logger = logging.getLogger(__name__)


def ledger_path(config: LorafleetConfig, store: AdapterStore) -> str:
    """server.usage.ledger_path, else next to a local store (on its volume, so it
    survives restarts); an S3 store has no local volume: the node-local adapter
    cache is used, which a restart on another node does not keep (logged)."""
    if config.server.usage.ledger_path:
        return config.server.usage.ledger_path
    root = getattr(store, "root", None)
    if root is not None:
        return str(Path(root) / ".lorafleet" / "usage.sqlite")
    logger.warning("usage ledger kept in the node-local cache %s: set server.usage.ledger_path to a durable volume, "
                   "or use server.usage.backend: postgres", store.cache_dir)
    return str(Path(store.cache_dir) / "usage.sqlite")


def journal_dir(config: LorafleetConfig, store: AdapterStore, dsn: str) -> Path:
    """The PostgreSQL ledger's journal: on the node's own disk (the adapter cache's
    folder unless server.usage.journal_dir says otherwise), in a subfolder per database,
    so two deployments sharing a node's cache never apply each other's journals."""
    root = Path(config.server.usage.journal_dir or Path(store.cache_dir) / "usage-journal")
    return root / postgres.database_id(dsn)


def open_ledger(config: LorafleetConfig, store: AdapterStore, *, on_write_failure: Callable[[], None] | None = None) -> UsageLedger:
    usage = config.server.usage
    if usage.backend == "postgres":
        dsn = postgres.dsn_from_env(usage.postgres_dsn_env)
        return UsageLedger(store=PostgresLedgerStore(dsn), journal_dir=journal_dir(config, store, dsn),
                           flush_period_s=usage.flush_period_s, on_write_failure=on_write_failure)
    return UsageLedger(ledger_path(config, store), journal_dir=usage.journal_dir, flush_period_s=usage.flush_period_s,
                       on_write_failure=on_write_failure)


def open_limiter(config: LorafleetConfig, *, clock: Callable[[], float] = time.monotonic,
                 on_store_state: Callable[[bool], None] | None = None) -> RateLimiter:
    """In-memory buckets (1/ingress_replicas of each key's limits per replica), or the
    shared buckets in PostgreSQL with those as the fallback while it is down. `clock`
    drives the in-memory buckets; the shared ones use the database's clock.
    `on_store_state(up)`: told at start and whenever the shared store goes or comes back."""
    local = KeyRateLimiter(shares=config.deployment.ingress_replicas, clock=clock)
    usage, limits = config.server.usage, config.server.limits
    if usage.backend != "postgres":
        return local
    buckets = PostgresBuckets(postgres.dsn_from_env(usage.postgres_dsn_env), timeout_s=limits.store_timeout_s)
    if on_store_state is not None:
        on_store_state(True)
    return SharedRateLimiter(buckets, fallback=local, when_down=limits.when_store_down, timeout_s=limits.store_timeout_s,
                             on_store_state=on_store_state)
