"""Per-key limits exact across ingress replicas and restarts: the buckets in a shared store.

Every request takes from its key's bucket in the store in one statement
(deployments.tenancy.ratelimit_postgres), so N ingress replicas enforce one limit
instead of N shares of it, a request larger than one replica's share is no longer
refused, and a restarted replica finds the bucket as it was left. The statement runs
on a small thread pool, so the event loop never waits on the database; a request
waits at most `timeout_s` for it (measured: bench/shared_limits.py).

Settlements (the part of a reservation a request did not use, or what it used beyond
it) are off the request path: summed per key and written by a background thread,
within milliseconds.

When the store is down, requests must still be served. The first failure (an error, or
no answer within `timeout_s`) marks the store down; from then on no request waits for
it, and a background thread probes it every `retry_s` until it answers. Meanwhile the
limits follow `when_down`:

- `local` (default): each replica's in-memory buckets with 1/replicas of every key's
  limits, exactly what the server does without a shared store. Nothing goes unmetered
  and nothing is refused because of the outage; the limits are approximate for its
  length, and the shared buckets do not learn what was spent meanwhile.
- `open`: no rate limits during the outage (availability first; a key may exceed its
  limits for as long as the outage lasts).
- `closed`: requests that a limit applies to get 503 until the store is back (strict
  quotas: nothing runs unmetered, at the cost of an outage of the API).

Settlements owed to the shared buckets are kept in memory and written when it is back.
A settlement whose commit answer was lost with the connection may be written twice:
tokens given back (or charged) twice, at most once per failure, never usage billed
twice (the ledger is separate and exactly once).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Protocol

from deployments.errors import StoreUnavailable
from deployments.tenancy.keys import Principal
from deployments.tenancy.ratelimit import (
    KeyRateLimiter,
    Reservation,
    larger_than_a_minute,
    requests_limited,
    tokens_limited,
)

logger = logging.getLogger(__name__)

WhenDown = Literal["local", "open", "closed"]


class BucketStore(Protocol):
    def take(self, key_id: str, kind: str, *, limit: float, rate: float, capacity: float, amount: float,
             now: float | None) -> float:
        """Atomically refill the key's `kind` bucket, take `amount` if it fits and return
        0, else take nothing and return the wait in seconds. Raises StoreUnavailable."""

    def give(self, amounts: Sequence[tuple[str, float]], now: float | None) -> None:
        """Add each (key_id, tokens) to the key's token bucket. Raises StoreUnavailable."""

    def ping(self) -> None: ...

    def reset(self) -> None:
        """Drop every connection before its next use (they outlived the store's outage)."""

    def close(self) -> None: ...


class SharedRateLimiter:
    def __init__(
        self,
        buckets: BucketStore,
        *,
        fallback: KeyRateLimiter,
        when_down: WhenDown = "local",
        timeout_s: float = 0.5,
        retry_s: float = 1.0,
        clock: Callable[[], float] | None = None,
        threads: int = 4,
        on_store_state: Callable[[bool], None] | None = None,
    ):
        """`clock` None: the store's own clock (one timeline for every replica); tests
        inject one. `threads`: concurrent statements, one database connection each."""
        self.buckets = buckets
        self.fallback = fallback
        self.when_down = when_down
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._clock = clock
        self._on_store_state = on_store_state
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="rate-limits")
        self._down = threading.Event()
        self._owed: dict[str, float] = {}
        self._owed_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="rate-limits-keeper", daemon=True)
        self._keeper.start()
        for _ in range(threads):  # connect (and create the tables) now, not on the first requests
            self._executor.submit(self._warm_up)

    @property
    def store_up(self) -> bool:
        return not self._down.is_set()

    # ------------------------------------------------------------------ the request path

    async def admit(self, principal: Principal) -> None:
        limit = principal.requests_per_second
        if limit is None:
            return
        wait = await self._take(principal.key_id, "requests", limit=limit, rate=limit, capacity=max(1.0, limit), amount=1)
        if wait is None:
            if self.when_down == "local":
                await self.fallback.admit(principal)
            elif self.when_down == "closed":
                raise self._refusal()
        elif wait:
            raise requests_limited(limit, wait)

    async def reserve(self, principal: Principal, tokens: int) -> Reservation | None:
        limit = principal.tokens_per_minute
        if limit is None:
            return None
        if tokens > limit:
            raise larger_than_a_minute(limit, tokens, per_replica=False)
        wait = await self._take(principal.key_id, "tokens", limit=limit, rate=limit / 60.0, capacity=float(limit),
                                amount=tokens)
        if wait is None:
            if self.when_down == "local":
                return await self.fallback.reserve(principal, tokens, whole_share=True)
            if self.when_down == "closed":
                raise self._refusal()
            return None
        if wait:
            raise tokens_limited(limit, tokens, wait)
        return Reservation(principal.key_id, tokens, shared=True)

    def settle(self, reservation: Reservation | None, used_tokens: int) -> None:
        if reservation is None or reservation.settled:
            return
        if not reservation.shared:  # taken from the fallback while the store was down
            self.fallback.settle(reservation, used_tokens)
            return
        reservation.settled = True
        with self._owed_lock:
            self._owed[reservation.key_id] = self._owed.get(reservation.key_id, 0.0) + reservation.tokens - used_tokens
        self._wake.set()

    async def _take(self, key_id: str, kind: str, **bucket: float) -> float | None:
        """The wait from the shared bucket, or None when the store is down (or just failed)."""
        if self._down.is_set():
            return None
        call = functools.partial(self.buckets.take, key_id, kind, now=self._now(), **bucket)
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._executor, call), self.timeout_s)
        except StoreUnavailable as err:
            self._mark_down(str(err))
        except asyncio.TimeoutError:
            self._mark_down(f"no answer within {self.timeout_s:g} s (server.limits.store_timeout_s)")
        return None

    def _warm_up(self) -> None:
        try:
            self.buckets.ping()
        except StoreUnavailable as err:
            self._mark_down(str(err))

    def _refusal(self) -> StoreUnavailable:
        return StoreUnavailable(
            "The shared rate limits' database is unavailable and this server does not serve unmetered requests "
            "(server.limits.when_store_down: closed); retry shortly.", retry_after_s=max(1, round(self.retry_s)))

    def _now(self) -> float | None:
        return self._clock() if self._clock is not None else None

    # ------------------------------------------------------------------ the store's state

    def _mark_down(self, reason: str) -> None:
        if self._down.is_set():
            return
        self._down.set()
        self.buckets.reset()  # the pool's connections are stale by the time it is back
        logger.error("shared rate limits unavailable (%s): limits are %s until the database answers again", reason,
                     {"local": "per replica (1/replicas of each key's limit)", "open": "off",
                      "closed": "refusing requests with 503"}[self.when_down])
        if self._on_store_state is not None:
            self._on_store_state(False)
        self._wake.set()

    def _keep(self) -> None:
        """The background thread: writes settlements; while the store is down, probes it."""
        while True:
            if self._down.is_set():
                if self._stop.wait(self.retry_s):
                    return
                try:
                    self.buckets.ping()
                except StoreUnavailable:
                    continue
                self._down.clear()
                logger.warning("shared rate limits are back: limits are exact across replicas again")
                if self._on_store_state is not None:
                    self._on_store_state(True)
            else:
                self._wake.wait()
                self._wake.clear()
                if self._stop.is_set():
                    return
            self.flush()

    def flush(self) -> bool:
        """Write the settlements owed to the shared buckets; False (kept for later) if the
        store cannot take them."""
        with self._owed_lock:
            owed, self._owed = self._owed, {}
        if not owed:
            return True
        try:
            self.buckets.give(sorted(owed.items()), self._now())
            return True
        except StoreUnavailable as err:
            with self._owed_lock:
                for key_id, amount in owed.items():
                    self._owed[key_id] = self._owed.get(key_id, 0.0) + amount
            self._mark_down(str(err))
            return False

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._keeper.join(timeout=5)
        if self.store_up:
            self.flush()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.buckets.close()
