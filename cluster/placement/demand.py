"""Per-adapter demand: exponentially weighted request and token rates.

Replicas report cumulative per-adapter counters (`ReplicaStats.per_adapter_requests`
and `per_adapter_tokens`). The estimator turns successive reports into per-adapter
increments, sums them over replicas, and keeps a time-decayed average rate.

Why decayed sums and not `ewma += alpha * (sample - ewma)`: reports arrive at
irregular intervals and the controller may start in the middle of a run. Keeping a
decayed count S and a decayed elapsed time T (both multiplied by 2^(-dt/half_life)
at every update) and reporting S / T weights every second of history equally within
the half-life, whatever the interval lengths, and is unbiased from the very first
interval (a plain EWMA started at zero underestimates every rate for several
half-lives, which would make the planner's demand floor drop real adapters).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cluster.stats import ReplicaStats

# An adapter whose decayed request count falls below this is forgotten, so the table
# does not grow with every adapter ever seen. At the default 30 s half-life that is a
# rate below ~2e-5 requests/s, far under any sensible demand floor.
_FORGET_BELOW = 1e-3


@dataclass(frozen=True)
class AdapterDemand:
    """Estimated demand of one adapter across the fleet.

    `window_s` is how much (decayed) time the estimate rests on, so
    `req_rate * window_s` is the number of requests behind it: the planner uses it
    to tell a real difference in demand from Poisson noise (an adapter seen twice
    is not reliably hotter than one seen once). 0 means "exact" (no noise), e.g.
    rates known in hindsight or set by hand.
    """

    req_rate: float  # requests per second
    token_rate: float  # generated tokens per second
    window_s: float = 0.0
    # Request rate over a long memory (the estimator's warm_half_life_s); 0: none.
    # An adapter asked for once every few minutes has a short-window rate of
    # about zero between requests, yet it is part of the working set that should
    # stay warm in host memory when store reads are slow.
    long_req_rate: float = 0.0

    def samples(self) -> float | None:
        """Requests the estimate rests on; None for an exact rate."""
        return self.req_rate * self.window_s if self.window_s > 0 else None


class DemandEstimator:
    """Fleet-wide EWMA of each adapter's request and token rate.

    Feed it either whole reports (`observe`: cumulative counters, resets handled) or
    increments you computed yourself (`add`). Timestamps are the caller's clock, in
    seconds, non-decreasing; an observation at the same time as the previous one only
    records counters.
    """

    def __init__(self, half_life_s: float = 30.0, long_half_life_s: float | None = None) -> None:
        """`long_half_life_s`: also keep request rates over this much longer memory
        (`AdapterDemand.long_req_rate`); None: no long memory."""
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        if long_half_life_s is not None and long_half_life_s <= 0:
            raise ValueError(f"long_half_life_s must be > 0, got {long_half_life_s}")
        self.half_life_s = half_life_s
        self.long_half_life_s = long_half_life_s
        self._last_ts: float | None = None
        self._elapsed = 0.0  # decayed elapsed time T
        self._requests: dict[str, float] = {}  # decayed request counts S
        self._tokens: dict[str, float] = {}
        self._long_elapsed = 0.0
        self._long_requests: dict[str, float] = {}
        # replica_id -> (requests counters, tokens counters) as last reported
        self._counters: dict[str, tuple[dict[str, int], dict[str, int]]] = {}

    # ---- input ---------------------------------------------------------------------

    def observe(self, stats: Iterable[ReplicaStats], now: float) -> None:
        """Take the latest report of each replica and fold in what changed since its
        previous report.

        Counter resets: a counter lower than last time means the replica restarted
        (or its counters were reset), so the new value is all that happened since;
        the same holds per adapter. The first report of a replica only sets its
        baseline: its counters cover an unknown stretch of time before this one, and
        counting them as one interval's worth would show a spike.
        """
        requests: dict[str, float] = {}
        tokens: dict[str, float] = {}
        for s in stats:
            previous = self._counters.get(s.replica_id)
            current = (dict(s.per_adapter_requests), dict(s.per_adapter_tokens))
            self._counters[s.replica_id] = current
            if previous is None:
                continue
            _add_increments(requests, previous[0], current[0])
            _add_increments(tokens, previous[1], current[1])
        self.add(now, requests, tokens)

    def add(
        self,
        now: float,
        requests: Mapping[str, float],
        tokens: Mapping[str, float] | None = None,
    ) -> None:
        """Fold in increments (requests and tokens per adapter) that happened since
        the previous call, ending at `now`. The first call only starts the clock
        (there is no interval to attribute its increments to)."""
        if self._last_ts is None:
            self._last_ts = now
            return
        dt = now - self._last_ts
        if dt < 0:
            raise ValueError(f"time went backwards: {now} < {self._last_ts}")
        self._last_ts = now
        if dt > 0:
            decay = 0.5 ** (dt / self.half_life_s)
            self._elapsed = self._elapsed * decay + dt
            _decay(self._requests, decay)
            _decay(self._tokens, decay)
            if self.long_half_life_s is not None:
                long_decay = 0.5 ** (dt / self.long_half_life_s)
                self._long_elapsed = self._long_elapsed * long_decay + dt
                _decay(self._long_requests, long_decay)
        for adapter, n in requests.items():
            if n > 0:
                self._requests[adapter] = self._requests.get(adapter, 0.0) + n
                if self.long_half_life_s is not None:
                    self._long_requests[adapter] = self._long_requests.get(adapter, 0.0) + n
        for adapter, n in (tokens or {}).items():
            if n > 0:
                self._tokens[adapter] = self._tokens.get(adapter, 0.0) + n
        self._prune()

    def forget(self, replica_id: str) -> None:
        """Drop a replica's last counters (it left the fleet). If it comes back under
        the same id, its next report sets a new baseline."""
        self._counters.pop(replica_id, None)

    # ---- output --------------------------------------------------------------------

    def rates(self) -> dict[str, AdapterDemand]:
        """Every adapter with recent demand -> its estimated rates. Empty until two
        observations have spanned some time."""
        if self._elapsed <= 0:
            return {}
        t = self._elapsed
        long_t = self._long_elapsed
        names = set(self._requests).union(self._tokens, self._long_requests)
        return {
            a: AdapterDemand(
                self._requests.get(a, 0.0) / t,
                self._tokens.get(a, 0.0) / t,
                t,
                self._long_requests.get(a, 0.0) / long_t if long_t > 0 else 0.0,
            )
            for a in sorted(names)
        }

    def rate(self, adapter: str) -> AdapterDemand:
        if self._elapsed <= 0:
            return AdapterDemand(0.0, 0.0)
        t = self._elapsed
        long_t = self._long_elapsed
        return AdapterDemand(
            self._requests.get(adapter, 0.0) / t,
            self._tokens.get(adapter, 0.0) / t,
            t,
            self._long_requests.get(adapter, 0.0) / long_t if long_t > 0 else 0.0,
        )

    def _prune(self) -> None:
        cold = [a for a, s in self._requests.items() if s < _FORGET_BELOW]
        for a in cold:
            del self._requests[a]
            self._tokens.pop(a, None)
        for a in [a for a, s in self._long_requests.items() if s < _FORGET_BELOW]:
            del self._long_requests[a]
        orphans = [a for a, s in self._tokens.items() if s < _FORGET_BELOW and a not in self._requests]
        for a in orphans:
            del self._tokens[a]


def _add_increments(
    into: dict[str, float], previous: Mapping[str, int], current: Mapping[str, int]
) -> None:
    for adapter, value in current.items():
        if not adapter:  # base-model requests ("" in replica counters): nothing to place
            continue
        before = previous.get(adapter, 0)
        delta = value - before if value >= before else value  # lower: counter reset
        if delta > 0:
            into[adapter] = into.get(adapter, 0.0) + delta


def _decay(values: dict[str, float], factor: float) -> None:
    for key in values:
        values[key] *= factor
