"""Admission control for one ingress replica: admit a request only if it can start soon.

Why: without it, overload turns into queues. Ray Serve queues requests for the ingress
at its HTTP proxy and for the engines at each caller's handle; past the point where the
engines are busy, every extra request waits behind the others, latency grows with the
queue for everyone admitted, and memory grows with it. Refusing at once what the fleet
cannot start within a bound (503 + Retry-After, before the body is read) keeps the
admitted requests' latency bounded and tells clients when to come back.

`LatencyBoundedGate` admits a request when the engines have a free slot (`slots`: what
they run at once), or when its expected wait, by Little's law the requests queued
ahead of it divided by the rate requests complete (measured here, decayed), is within
`max_wait_s`; and never more than `hard_limit` at once. Until a completion rate is
known it admits up to `slots + cold_queue` (the engines' own queue allowance). Pure
bookkeeping with an injected clock: the ingress asks, this answers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Ticket:
    """One admitted request's place; `release` is idempotent, so every path that can
    end a request (normal end, error, a stream dropped unstarted) may call it."""

    __slots__ = ("_gate", "_released")

    def __init__(self, gate: "AdmissionGate"):
        self._gate = gate
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._gate._leave()


class AdmissionGate:
    """Counts admitted requests; `try_enter` refuses (None) once `limit` are in flight."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"admission limit must be >= 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.refused = 0
        self._refused_reported = 0

    def waiting(self) -> int:
        """Admitted requests without an engine seat now (0: the gate does not know seats)."""
        return 0

    def held_back(self) -> int:
        """Demand the fleet is not serving now: requests waiting for a seat plus those
        refused since the last call (the autoscaler's queue signal, via the controller)."""
        refused, self._refused_reported = self.refused - self._refused_reported, self.refused
        return self.waiting() + refused

    def try_enter(self) -> Ticket | None:
        if self.in_flight >= self.limit:
            self.refused += 1
            return None
        self.in_flight += 1
        return Ticket(self)

    def _leave(self) -> None:
        self.in_flight -= 1


class CompletionRate:
    """Requests completed per second, exponentially decayed over `half_life_s`."""

    def __init__(self, half_life_s: float, clock: Callable[[], float]):
        self.half_life_s = half_life_s
        self._clock = clock
        self._count = 0.0  # decayed completions
        self._elapsed = 0.0  # decayed time
        self._at = clock()
        self.seen = 0

    def _decay(self) -> None:
        now = self._clock()
        dt = now - self._at
        if dt > 0:
            factor = 0.5 ** (dt / self.half_life_s)
            self._count *= factor
            self._elapsed = self._elapsed * factor + dt
            self._at = now

    def add(self) -> None:
        self._decay()
        self._count += 1
        self.seen += 1

    def per_second(self) -> float | None:
        """None until a completion was seen (no basis for an estimate)."""
        self._decay()
        if not self.seen or self._elapsed <= 0:
            return None
        return self._count / self._elapsed


class LatencyBoundedGate(AdmissionGate):
    def __init__(self, *, hard_limit: int, slots: int, max_wait_s: float, cold_queue: int,
                 clock: Callable[[], float] = time.monotonic, rate_half_life_s: float = 5.0):
        super().__init__(hard_limit)
        self.slots = max(1, slots)
        self.max_wait_s = max_wait_s
        self.cold_queue = cold_queue
        self.rate = CompletionRate(rate_half_life_s, clock)
        self.last_refusal_wait_s = 0.0

    def set_slots(self, slots: int) -> None:
        """The engines' concurrency changed (replicas added or removed)."""
        self.slots = max(1, slots)

    def waiting(self) -> int:
        return max(0, self.in_flight - self.slots)

    def expected_wait_s(self) -> float:
        """How long a request arriving now would wait for an engine slot."""
        queued_ahead = self.in_flight - self.slots + 1
        if queued_ahead <= 0:
            return 0.0
        rate = self.rate.per_second()
        if rate is None:
            return 0.0 if queued_ahead <= self.cold_queue else math.inf
        return queued_ahead / max(rate, 1e-9)

    def try_enter(self) -> Ticket | None:
        if self.in_flight >= self.limit:
            return self._refuse(math.inf)
        wait = self.expected_wait_s()
        if wait > self.max_wait_s:
            return self._refuse(wait)
        self.in_flight += 1
        return Ticket(self)

    def retry_after_s(self) -> int:
        """Whole seconds a refused client should wait: the excess of the last refusal's
        expected wait over the bound, at least 1, at most 30."""
        excess = self.last_refusal_wait_s - self.max_wait_s
        if not math.isfinite(excess):
            return 1
        return int(min(30, max(1, math.ceil(excess))))

    def _refuse(self, wait: float) -> None:
        self.refused += 1
        self.last_refusal_wait_s = wait
        return None

    def _leave(self) -> None:
        super()._leave()
        self.rate.add()


def ingress_admission_limit(*, configured: int, num_replicas: int, max_ongoing_requests: int, max_queued_requests: int) -> int:
    """The per-ingress-replica hard cap: the configured value, or (0) what the engine
    replicas can run plus what Ray may queue for this caller, so the ingress never
    holds more than the engines could take anyway."""
    return configured or num_replicas * max_ongoing_requests + max_queued_requests
