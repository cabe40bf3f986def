"""Admission control for one ingress replica: a cap on requests in flight.

Why: without it, overload turns into queues. Ray Serve queues requests for the
ingress at the HTTP proxy, and the engine handle queues up to `max_queued_requests`
per caller; past those, latency grows with the queue and memory with it. Refusing
work the fleet cannot start soon, at once and cheaply (503 + Retry-After, before the
body is even read), keeps admitted requests' latency bounded and lets clients back
off. Pure bookkeeping: the ingress asks, this answers.
"""

from __future__ import annotations


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
            self._gate.in_flight -= 1


class AdmissionGate:
    """Counts admitted requests; `try_enter` refuses (None) once `limit` are in flight."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"admission limit must be >= 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.refused = 0

    def try_enter(self) -> Ticket | None:
        if self.in_flight >= self.limit:
            self.refused += 1
            return None
        self.in_flight += 1
        return Ticket(self)


def ingress_admission_limit(*, configured: int, num_replicas: int, max_ongoing_requests: int, max_queued_requests: int) -> int:
    """The per-ingress-replica cap: the configured value, or (0) what the engine
    replicas can run plus what Ray may queue for this caller, so the ingress never
    holds more than the engines could take anyway."""
    return configured or num_replicas * max_ongoing_requests + max_queued_requests
