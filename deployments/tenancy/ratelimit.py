"""Per-key rate limits: requests per second and tokens per minute, as token buckets.

Pure and clock-injected, so the arithmetic is tested without sleeping. Tokens per
minute are reserved when a request is admitted (prompt + the most it may generate)
and settled when it ends (the real prompt + completion tokens): a short answer gives
the unused part back, and a client cannot start more work than its budget covers.

`KeyRateLimiter` keeps the buckets in this process's memory, each with 1/`shares` of
the key's limits (`shares` = ingress replicas). Ray Serve's proxies spread requests
over the ingress replicas, so the sum is close to the configured limit, not exact, and
a restarted replica starts full; with a single ingress replica it is exact. With a
shared store (PostgreSQL) the buckets live in the database and are exact across
replicas and restarts: `deployments.tenancy.ratelimit_shared.SharedRateLimiter`, which
falls back to a `KeyRateLimiter` while the database is down. Both implement
`RateLimiter`; `admit` and `reserve` are coroutines because the shared one awaits its
database.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from deployments.errors import InvalidRequest, RateLimited
from deployments.tenancy.keys import Principal


class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second. A take that does not fit
    returns the seconds until it would; `settle` may push the level below zero
    (usage above its reservation is paid for by waiting longer)."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]):
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._level = capacity
        self._at = clock()

    def level(self) -> float:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now
        return self._level

    def try_take(self, amount: float) -> float:
        """Take `amount` and return 0, or take nothing and return the wait in seconds."""
        level = self.level()
        if level >= amount:
            self._level = level - amount
            return 0.0
        return (amount - level) / self.rate

    def give(self, amount: float) -> None:
        """Return (positive) or charge (negative) tokens after the fact."""
        self._level = min(self.capacity, self.level() + amount)


def retry_after(wait_s: float) -> int:
    """Whole seconds a client should wait: rounded up, at least 1 (the header's unit)."""
    return max(1, math.ceil(wait_s - 1e-9))


@dataclass
class Reservation:
    """Tokens held for one admitted request until `settle`; `shared`: held in the shared
    store (else in this process's buckets)."""

    key_id: str
    tokens: int
    settled: bool = False
    shared: bool = False


class RateLimiter(Protocol):
    async def admit(self, principal: Principal) -> None:
        """Count one request against the key's requests per second, or raise RateLimited."""

    async def reserve(self, principal: Principal, tokens: int) -> Reservation | None:
        """Hold `tokens` of the key's tokens per minute (None: the key has no token limit),
        or raise RateLimited (retry later) or InvalidRequest (retrying cannot help)."""

    def settle(self, reservation: Reservation | None, used_tokens: int) -> None:
        """The request ended having used `used_tokens`: give back (or charge) the
        difference. Never blocks: it runs on the request path's way out."""

    def close(self) -> None:
        """Shutdown: write what is owed, let go of connections."""


def requests_limited(limit: float, wait_s: float) -> RateLimited:
    return RateLimited(
        f"Rate limit reached for requests: this key may send {limit:g} requests per second. "
        f"Retry after {retry_after(wait_s)} s.",
        retry_after_s=retry_after(wait_s),
        kind="requests",
    )


def tokens_limited(limit: int, tokens: int, wait_s: float) -> RateLimited:
    return RateLimited(
        f"Rate limit reached for tokens: this key may use {limit} tokens per minute and this request "
        f"reserves {tokens}. Retry after {retry_after(wait_s)} s.",
        retry_after_s=retry_after(wait_s),
        kind="tokens",
    )


def larger_than_a_minute(limit: int, tokens: int, per_replica: bool) -> InvalidRequest:
    return InvalidRequest(
        f"This request may use up to {tokens} tokens (prompt + max_tokens), more than this key's limit of "
        f"{limit} tokens per minute{' per ingress replica' if per_replica else ''}: "
        "lower max_tokens or shorten the prompt.",
        param="max_tokens",
    )


class KeyRateLimiter:
    """Buckets per key id, rebuilt when a key's limits change (keys file reload)."""

    def __init__(self, shares: int = 1, clock: Callable[[], float] = time.monotonic):
        self.shares = max(1, shares)
        self._clock = clock
        self._requests: dict[str, tuple[float, TokenBucket]] = {}
        self._tokens: dict[str, tuple[int, TokenBucket]] = {}

    def _bucket(self, table: dict, key_id: str, limit: float, per_s: float, capacity: float) -> TokenBucket:
        held = table.get(key_id)
        if held is None or held[0] != limit:
            held = table[key_id] = (limit, TokenBucket(per_s, capacity, self._clock))
        return held[1]

    async def admit(self, principal: Principal) -> None:
        """Count one request against the key's requests per second, or raise RateLimited."""
        limit = principal.requests_per_second
        if limit is None:
            return
        rate = limit / self.shares
        bucket = self._bucket(self._requests, principal.key_id, limit, rate, max(1.0, rate))
        wait = bucket.try_take(1)
        if wait:
            raise requests_limited(limit, wait)

    async def reserve(self, principal: Principal, tokens: int, *, whole_share: bool = False) -> Reservation | None:
        """Hold `tokens` of the key's tokens per minute, or raise RateLimited (retry later)
        or InvalidRequest (more than a whole minute's budget: retrying cannot help).
        `whole_share`: a request larger than this replica's share takes the whole share
        instead of a 400 (the shared limiter's fallback: the key's full limit allows it)."""
        limit = principal.tokens_per_minute
        if limit is None:
            return None
        capacity = limit / self.shares
        if tokens > capacity:
            if not whole_share:
                raise larger_than_a_minute(limit, tokens, per_replica=self.shares > 1)
            # Reserve the share; settling with the real usage charges the rest.
            return await self.reserve(principal, int(capacity))
        bucket = self._bucket(self._tokens, principal.key_id, limit, capacity / 60.0, capacity)
        wait = bucket.try_take(tokens)
        if wait:
            raise tokens_limited(limit, tokens, wait)
        return Reservation(principal.key_id, tokens)

    def settle(self, reservation: Reservation | None, used_tokens: int) -> None:
        """The request ended having used `used_tokens`: give back (or charge) the difference."""
        if reservation is None or reservation.settled:
            return
        reservation.settled = True
        held = self._tokens.get(reservation.key_id)
        if held is not None:
            held[1].give(reservation.tokens - used_tokens)

    def close(self) -> None:
        """Nothing to write: the buckets live and die with the process."""
