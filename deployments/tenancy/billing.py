"""Billing one admitted request: what it used goes to the key's token budget and to the
usage ledger, exactly once, whichever way the request ended.

Three endings, one rule ("bill what the engine produced"):
- it completed: the engine's own usage (the response's `usage`) is billed;
- it failed before the engine produced anything: nothing is billed and the token
  reservation is given back;
- its client went away mid-generation: the engine stops the request and reports what it
  had produced by then (prompt tokens plus the generated tokens so far). That count
  arrives out of band (the client's stream is gone), so the bill waits in `PendingBills`
  until the engine's report comes; if none comes within `timeout_s` (the replica died
  with it), the request is billed what the ingress itself saw leave the engine, a lower
  bound, and counted as estimated. The report can also arrive first (the engine's
  cancellation and its report's round trip can overtake the ingress's own): it is kept,
  for as long, and settles the bill the moment it is expected.

Pure and clock-injected: no Ray, no FastAPI, no I/O beyond the ledger's `record`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from deployments.engine.protocol import FinalUsage
from deployments.tenancy.keys import Principal
from deployments.tenancy.ratelimit import RateLimiter, Reservation

logger = logging.getLogger(__name__)


class Bill:
    """One request's bill; `charge` and `refund` settle it once (later calls do nothing)."""

    __slots__ = ("principal", "adapter", "reservation", "_limiter", "_ledger", "_on_billed", "settled")

    def __init__(
        self,
        limiter: RateLimiter,
        ledger,
        principal: Principal,
        adapter: str,
        reservation: Reservation | None,
        on_billed: Callable[[Principal, str, FinalUsage], None] | None = None,
    ):
        self.principal = principal
        self.adapter = adapter  # the ledger's adapter column: an adapter name, or the base model's
        self.reservation = reservation
        self._limiter = limiter
        self._ledger = ledger
        self._on_billed = on_billed
        self.settled = False

    def charge(self, usage: FinalUsage) -> None:
        """Bill `usage`: the key's token budget pays the real amount, the ledger records it."""
        if self.settled:
            return
        self.settled = True
        self._limiter.settle(self.reservation, usage.prompt_tokens + usage.completion_tokens)
        if self._ledger is not None:
            self._ledger.record(self.principal.key_id, self.principal.tenant, self.adapter,
                                usage.prompt_tokens, usage.completion_tokens)
        if self._on_billed is not None:
            self._on_billed(self.principal, self.adapter, usage)

    def refund(self) -> None:
        """The engine produced nothing for this request: give the reservation back."""
        if self.settled:
            return
        self.settled = True
        self._limiter.settle(self.reservation, 0)


def _charge(bill: Bill, reported: FinalUsage, seen: FinalUsage) -> None:
    """The engine's count, never less than what the client demonstrably received."""
    bill.charge(FinalUsage(max(reported.prompt_tokens, seen.prompt_tokens),
                           max(reported.completion_tokens, seen.completion_tokens)))


@dataclass
class _Waiting:
    bill: Bill
    seen: FinalUsage  # what the ingress saw leave the engine before the client went away
    deadline: float


class PendingBills:
    """Bills of requests whose client left mid-generation, until the engine reports
    what it produced (`settle`) or `timeout_s` passes (`expire`, billed `seen`)."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic, max_waiting: int = 100_000,
                 on_estimated: Callable[[], None] | None = None):
        self.timeout_s = timeout_s
        self._clock = clock
        self._on_estimated = on_estimated
        self._max_waiting = max_waiting
        self._waiting: dict[str, _Waiting] = {}
        self._early: dict[str, tuple[FinalUsage, float]] = {}  # reports ahead of their bill: (usage, deadline)
        self.estimated = 0  # bills settled from the ingress's own lower bound (no engine report)

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, request_id: str, bill: Bill, seen: FinalUsage) -> None:
        if bill.settled:
            return
        early = self._early.pop(request_id, None)
        if early is not None:  # the engine's report came first
            _charge(bill, early[0], seen)
            return
        if len(self._waiting) >= self._max_waiting:  # bounded: the oldest is billed what was seen
            oldest = next(iter(self._waiting))
            self._estimate(oldest)
        self._waiting[request_id] = _Waiting(bill, seen, self._clock() + self.timeout_s)

    def settle(self, request_id: str, usage: FinalUsage) -> bool:
        """The engine's count for `request_id` arrived; False if nothing waited for it
        yet (the report is then kept for `timeout_s`, for the bill it may be ahead of)."""
        waiting = self._waiting.pop(request_id, None)
        if waiting is None:
            if len(self._early) >= self._max_waiting:  # bounded: the oldest is dropped
                del self._early[next(iter(self._early))]
            self._early[request_id] = (usage, self._clock() + self.timeout_s)
            return False
        _charge(waiting.bill, usage, waiting.seen)
        return True

    def expire(self) -> int:
        """Bill every bill past its deadline what the ingress saw; returns how many.
        Reports no bill claimed within as long are dropped."""
        now = self._clock()
        for rid in [rid for rid, (_, deadline) in self._early.items() if deadline <= now]:
            del self._early[rid]
        expired = [rid for rid, w in self._waiting.items() if w.deadline <= now]
        for rid in expired:
            self._estimate(rid)
        return len(expired)

    def _estimate(self, request_id: str) -> None:
        waiting = self._waiting.pop(request_id)
        logger.warning("no engine usage report for aborted request %s within %.0f s; billing what the ingress saw (%s)",
                       request_id, self.timeout_s, waiting.seen)
        self.estimated += 1
        if self._on_estimated is not None:
            self._on_estimated()
        waiting.bill.charge(waiting.seen)

    def flush(self) -> None:
        """Shutdown: bill everything still waiting what was seen."""
        for rid in list(self._waiting):
            self._estimate(rid)
