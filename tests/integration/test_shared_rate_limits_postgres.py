"""Per-key limits shared by ingress replicas through a real PostgreSQL: exact under
concurrency from two limiter instances (two replicas), kept across a restart, and what
happens while the database is down (`server.limits.when_store_down`). A frozen clock is
injected, so "exact" means exact: no refill happens during a test unless it moves the
clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from deployments.errors import InvalidRequest, RateLimited, StoreUnavailable
from deployments.tenancy.keys import Principal
from deployments.tenancy.ratelimit import KeyRateLimiter
from deployments.tenancy.ratelimit_postgres import PostgresBuckets
from deployments.tenancy.ratelimit_shared import SharedRateLimiter

REPLICAS = 2


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def limiters(postgres_dsn, clock):
    """`limiters(n, when_down=...)`: n replicas' limiters on one database, closed at the end."""
    made = []

    def make(n: int = REPLICAS, when_down: str = "local", on_store_state=None) -> list[SharedRateLimiter]:
        new = [SharedRateLimiter(PostgresBuckets(postgres_dsn, timeout_s=2),
                                 fallback=KeyRateLimiter(shares=REPLICAS, clock=clock),
                                 when_down=when_down, timeout_s=2, retry_s=0.1, clock=clock,
                                 on_store_state=on_store_state) for _ in range(n)]
        made.extend(new)
        return new

    yield make
    for limiter in made:
        limiter.close()


async def _admitted(calls) -> int:
    """Run admit/reserve coroutines at once; how many were let through (the rest must be 429s)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, RateLimited)]
    assert not unexpected, unexpected
    return sum(not isinstance(r, BaseException) for r in results)


def _wait_until(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


async def test_two_replicas_admitting_at_once_let_through_exactly_the_keys_burst(limiters):
    """Per-replica buckets would let 2 x 20 through (each its own full limit) or, with
    1/replicas shares, 10 from the replica that got most of the traffic."""
    a, b = limiters()
    key = Principal("k", "acme", "tenant", requests_per_second=20)
    assert await _admitted([a.admit(key) for _ in range(70)] + [b.admit(key) for _ in range(30)]) == 20
    other = Principal("k2", "acme", "tenant", requests_per_second=20)
    assert await _admitted([a.admit(other) for _ in range(60)]) == 20  # all on one replica: the whole limit
    assert a.store_up and b.store_up


async def test_a_restarted_replica_finds_the_bucket_as_it_was_left_and_it_refills_with_time(limiters, clock):
    (a,) = limiters(1)
    key = Principal("k", "acme", "tenant", requests_per_second=5)
    assert await _admitted([a.admit(key) for _ in range(10)]) == 5
    a.close()
    (restarted,) = limiters(1)
    with pytest.raises(RateLimited) as err:
        await restarted.admit(key)
    assert err.value.retry_after_s == 1 and err.value.kind == "requests"
    clock.now += 0.6  # 3 tokens at 5/s
    assert await _admitted([restarted.admit(key) for _ in range(10)]) == 3


async def test_a_token_reservation_on_one_replica_and_its_settlement_are_seen_by_the_other(limiters):
    a, b = limiters()
    key = Principal("k", "acme", "tenant", tokens_per_minute=1000)  # 1/replicas would be 500 each
    held = await a.reserve(key, 600)  # more than one replica's share: admitted
    assert held is not None and held.shared
    with pytest.raises(RateLimited) as err:
        await b.reserve(key, 600)
    assert err.value.kind == "tokens" and err.value.retry_after_s == 12  # 200 missing at 1000/60 per s
    a.settle(held, 100)  # used 100 of 600: 500 back
    assert a.flush()
    assert await b.reserve(key, 600) is not None  # 900 left
    with pytest.raises(RateLimited):
        await a.reserve(key, 400)  # 300 left
    with pytest.raises(InvalidRequest, match="1000 tokens per minute"):
        await b.reserve(key, 1001)  # more than a whole minute: a 400, wherever it lands


async def test_charges_above_a_reservation_are_shared_too(limiters):
    a, b = limiters()
    key = Principal("k", "acme", "tenant", tokens_per_minute=1000)
    held = await a.reserve(key, 100)
    a.settle(held, 700)  # the engine produced more than reserved (n > 1 rounding, say): 600 charged
    assert a.flush()
    with pytest.raises(RateLimited):
        await b.reserve(key, 301)  # 1000 - 700 = 300 left
    assert await b.reserve(key, 300) is not None


async def test_while_the_database_is_down_each_mode_limits_as_configured_and_exactness_returns_with_it(
        limiters, postgres_server, clock):
    states = []  # what the ingress exports as lorafleet_rate_limit_store_up_replicas
    local, = limiters(1, when_down="local", on_store_state=states.append)
    opened, = limiters(1, when_down="open")
    closed, = limiters(1, when_down="closed")
    key = Principal("k", "acme", "tenant", requests_per_second=20, tokens_per_minute=1000)
    held = await local.reserve(key, 600)  # from the shared bucket, settled during the outage
    assert await _admitted([local.admit(key) for _ in range(20)]) == 20  # the shared burst, now spent
    postgres_server.stop()
    try:
        # local: this replica's share of the key's limits, in memory (20/s / 2 replicas)
        assert await _admitted([local.admit(key) for _ in range(30)]) == 10
        assert not local.store_up
        fallback = await local.reserve(key, 600)  # above the share (500): takes the whole share
        assert fallback is not None and not fallback.shared
        local.settle(held, 0)  # owed to the shared bucket: kept until it is back
        # open: no limits at all
        assert await _admitted([opened.admit(key) for _ in range(50)]) == 50
        assert await opened.reserve(key, 1000) is None
        # closed: 503 with Retry-After
        with pytest.raises(StoreUnavailable) as err:
            await closed.admit(key)
        assert err.value.retry_after_s >= 1
    finally:
        postgres_server.start_again()
    _wait_until(lambda: local.store_up and opened.store_up and closed.store_up)  # the background probe
    assert states == [False, True]
    # Shared again, as the buckets were left: the burst spent before the outage stays spent
    # (the frozen clock refills nothing), and the 600 tokens given back during it arrived.
    with pytest.raises(RateLimited):
        await closed.admit(key)
    assert local.flush()
    assert await closed.reserve(key, 1000) is not None


async def test_the_database_clock_is_used_when_no_clock_is_injected(postgres_dsn):
    limiter = SharedRateLimiter(PostgresBuckets(postgres_dsn), fallback=KeyRateLimiter(shares=REPLICAS))
    try:
        key = Principal("k", "acme", "tenant", requests_per_second=0.5)  # one every 2 s
        await limiter.admit(key)
        with pytest.raises(RateLimited) as err:
            await limiter.admit(key)
        assert err.value.retry_after_s == 2
        assert limiter.store_up
    finally:
        limiter.close()
