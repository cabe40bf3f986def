"""Admission control for one ingress replica: admit a request only if it can start soon.

Why: without it, overload turns into queues. Ray Serve queues requests for the ingress
at its HTTP proxy and for the engines at each caller's handle; past the point where the
engines are busy, every extra request waits behind the others, latency grows with the
queue for everyone admitted, and memory grows with it. Refusing at once what the fleet
cannot start within a bound (503 + Retry-After, before the engines see it) keeps the
admitted requests' latency bounded and tells clients when to come back.

`LatencyBoundedGate` applies one bound, and a second when `latency_bound_s` is set
(`server.max_added_latency_s`; off by default, because it refuses part of a burst the
engines could have batched, slowly):

- **a seat soon**: a request is admitted when the engines have a free slot (`slots`:
  what they run at once), or when its expected wait for one, by Little's law the
  requests queued ahead of it divided by the rate requests complete (measured here,
  decayed), is within `max_wait_s`. Until a completion rate is known it admits up to
  `slots + cold_queue` (the engines' own queue allowance).
- **a batch that still serves**: a free slot is not free latency. On engines whose step
  time grows with the batch (CPU engines; GPU engines past their memory-bound regime),
  filling every slot slows every request in it, so a gate that counts only slots admits
  more than the fleet serves within the bound. The gate therefore also keeps a
  concurrency limit that follows measured latency (additive increase, multiplicative
  decrease, as TCP and adaptive concurrency limiters do): each completion's time in the
  fleet (admission to answer) is smoothed; when it exceeds the unloaded time (the lowest
  smoothed value of the last `baseline_window_s`, learnt only while no request is being
  turned away) by more than `latency_bound_s`, the limit
  drops to what is in flight scaled by target / observed time (Little's law: on a
  saturated fleet time in it is proportional to what is in it), by at least a tenth,
  at most once per smoothed request time (one slow batch is one decrease); while
  requests are held at the limit and the smoothed wait is under three quarters of the
  bound, it grows by one per limit's worth of completions (between the two it holds,
  so it does not saw past the bound). It never falls below `floor` (one request per engine
  replica keeps every engine working) nor rises above `hard_limit`. The unloaded time is per workload: when answers grow longer the fleet
  looks slower until the window forgets the short ones; the floor keeps it serving.

Never more than `hard_limit` at once. Pure bookkeeping with an injected clock: the
ingress asks, this answers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Ticket:
    """One admitted request's place; `release` is idempotent, so every path that can
    end a request (normal end, error, a stream dropped unstarted) may call it."""

    __slots__ = ("_gate", "_released", "admitted_at")

    def __init__(self, gate: "AdmissionGate", admitted_at: float = 0.0):
        self._gate = gate
        self._released = False
        self.admitted_at = admitted_at

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._gate._leave(self)


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

    def _leave(self, ticket: Ticket) -> None:
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


class LatencyLimit:
    """The concurrency limit that follows measured latency (see the module docstring):
    `observe` each completion's time in the fleet; `limit` is how many may be in flight."""

    SMOOTHING = 0.2  # weight of the newest completion in the smoothed time
    DECREASE = 0.9
    HOLD = 0.75  # grow only while the smoothed wait is under this share of the bound (no sawing past it)

    def __init__(self, *, start: int, floor: int, ceiling: int, max_wait_s: float, baseline_window_s: float,
                 clock: Callable[[], float]):
        self.floor, self.ceiling = max(1, floor), max(1, ceiling)
        self.limit = float(min(max(start, self.floor), self.ceiling))
        self.max_wait_s = max_wait_s
        self.window_s = baseline_window_s
        self._clock = clock
        self.smoothed_s: float | None = None
        self._lows: list[tuple[float, float]] = []  # (at, smoothed): increasing smoothed, for the window's minimum
        self._decreased_at = -math.inf
        self._refused_at = -math.inf

    def refused(self) -> None:
        """The gate turned a request away (for any reason): the fleet is under pressure."""
        self._refused_at = self._clock()

    def baseline_s(self) -> float | None:
        """The lowest smoothed time in the window: what a request takes unqueued."""
        return self._lows[0][1] if self._lows else None

    def allows(self, in_flight: int) -> bool:
        return in_flight < int(self.limit)

    def set_bounds(self, floor: int, ceiling: int) -> None:
        self.floor, self.ceiling = max(1, floor), max(1, ceiling)
        self.limit = min(max(self.limit, self.floor), self.ceiling)

    def observe(self, duration_s: float, in_flight: int) -> None:
        """A request finished after `duration_s` in the fleet, `in_flight` still there."""
        now = self._clock()
        s = self.SMOOTHING
        self.smoothed_s = duration_s if self.smoothed_s is None else (1 - s) * self.smoothed_s + s * duration_s
        pressed = now - self._refused_at < 2 * self.smoothed_s  # requests were turned away lately
        if not pressed or not self._lows:
            # Learn the unloaded time only while nothing is turned away: under sustained
            # pressure every sample is a loaded one, and a baseline that learnt from them
            # would ratchet the limit up (a minimum-RTT limiter's flaw).
            self._remember_low(now, self.smoothed_s)
        target = self.baseline_s() + self.max_wait_s
        if self.smoothed_s > target:
            if now - self._decreased_at >= self.smoothed_s:
                # Little's law: on a saturated fleet the time in it grows with the requests
                # in it, so scale what is in flight by target / observed, in one step.
                self._decreased_at = now
                scaled = min(self.limit, in_flight + 1.0) * min(self.DECREASE, target / self.smoothed_s)
                self.limit = max(float(self.floor), scaled)
        elif self.smoothed_s <= target - (1 - self.HOLD) * self.max_wait_s and in_flight + 1 >= int(self.limit):
            # held at the limit with latency to spare: probe upward
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)

    def _remember_low(self, now: float, value: float) -> None:
        while self._lows and self._lows[-1][1] >= value:
            self._lows.pop()
        self._lows.append((now, value))
        while self._lows[0][0] < now - self.window_s and len(self._lows) > 1:
            self._lows.pop(0)


class LatencyBoundedGate(AdmissionGate):
    def __init__(self, *, hard_limit: int, slots: int, max_wait_s: float, cold_queue: int, floor: int = 1,
                 latency_bound_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                 rate_half_life_s: float = 5.0, baseline_window_s: float = 60.0):
        super().__init__(hard_limit)
        self.slots = max(1, slots)
        self.max_wait_s = max_wait_s
        self.cold_queue = cold_queue
        self._clock = clock
        self.rate = CompletionRate(rate_half_life_s, clock)
        self.latency = None if latency_bound_s is None else LatencyLimit(
            start=hard_limit, floor=floor, ceiling=hard_limit, max_wait_s=latency_bound_s,
            baseline_window_s=baseline_window_s, clock=clock)
        self.last_refusal_wait_s = 0.0

    def set_slots(self, slots: int, floor: int | None = None) -> None:
        """The engines' concurrency changed (replicas added or removed); `floor`: the
        engine replicas this ingress feeds (one request each keeps them all working)."""
        self.slots = max(1, slots)
        if self.latency is not None:
            self.latency.set_bounds(self.latency.floor if floor is None else floor, self.limit)

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
        if self.latency is not None and not self.latency.allows(self.in_flight):
            return self._refuse(self.max_wait_s + self._wait_for_limit_s())
        self.in_flight += 1
        return Ticket(self, self._clock())

    def _wait_for_limit_s(self) -> float:
        """How long until the requests over the latency limit would have finished."""
        rate = self.rate.per_second()
        over = self.in_flight - int(self.latency.limit) + 1
        return over / rate if rate else 1.0

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
        if self.latency is not None:
            self.latency.refused()
        return None

    def _leave(self, ticket: Ticket) -> None:
        super()._leave(ticket)
        self.rate.add()
        if self.latency is not None:
            self.latency.observe(self._clock() - ticket.admitted_at, self.in_flight)


def ingress_admission_limit(*, configured: int, num_replicas: int, max_ongoing_requests: int, max_queued_requests: int) -> int:
    """The per-ingress-replica hard cap: the configured value, or (0) what the engine
    replicas can run plus what Ray may queue for this caller, so the ingress never
    holds more than the engines could take anyway."""
    return configured or num_replicas * max_ongoing_requests + max_queued_requests
