"""Bounded `adapter` label values for metrics.

A fleet serves thousands of adapters; an `adapter` label with one value per adapter
would multiply every per-adapter series by thousands, and an exporter keeps a counter
series for as long as the process lives (Ray never drops one). So each process names at
most `top_k` adapters at a time and counts every other adapter under `_other`.

The rule, per process (ingress and each engine replica label on their own):

- Base-model requests are `_base`; a request that names no servable model (unknown
  name, invalid adapter, no `model` at all) is `_unknown`. These, and `_other`, start
  with `_`, which no adapter name may (names start with a letter or a digit), so they
  never collide with an adapter.
- While fewer than `top_k` adapters are named, a new adapter is named on its first
  request (first come, first named).
- Every `review_s` seconds the named set is compared with that window's traffic: an
  adapter among the window's `top_k` busiest that is not named replaces the least
  requested named adapter outside that top-k, if it had at least twice its requests
  (and at least 2). The factor of two is hysteresis, so two adapters of similar traffic do not swap
  back and forth.
- A name that was ever used keeps its series, so at most `max_names` (default 2 x
  top_k) distinct names are ever given out; after that the named set is frozen until
  the process restarts. The series count per labelled metric is therefore bounded by
  `max_names + 3` label values, whatever the traffic.

Consequences worth knowing when reading dashboards: per-adapter numbers are exact for
named adapters from the moment they were named; `_other` holds the rest; processes may
name different adapters near the top-k boundary (each sees its own traffic); summing
over `adapter` is always exact.

Cost per call: a dict increment, a clock read and set lookups; a review is
O(A log A) for A adapters seen in the window, once per `review_s`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

OTHER = "_other"
BASE = "_base"
UNKNOWN = "_unknown"
SPECIAL_LABELS = (OTHER, BASE, UNKNOWN)

HYSTERESIS = 2.0


class AdapterLabels:
    """Maps adapter names to bounded label values (see the module docstring)."""

    def __init__(
        self,
        top_k: int,
        review_s: float = 300.0,
        *,
        max_names: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        if review_s <= 0:
            raise ValueError(f"review_s must be > 0, got {review_s}")
        self.top_k = top_k
        self.review_s = review_s
        self.max_names = 2 * top_k if max_names is None else max_names
        if self.max_names < top_k:
            raise ValueError(f"max_names ({self.max_names}) must be >= top_k ({top_k})")
        self._clock = clock
        self._named: set[str] = set()
        self._ever_named: set[str] = set()
        self._window: Counter[str] = Counter()
        self._review_at = clock() + review_s

    def label(self, adapter: str | None) -> str:
        """The label value for one request to `adapter` (None or "" = the base model).
        Counts the request toward the adapter's traffic."""
        if not adapter:
            return BASE
        now = self._clock()
        if now >= self._review_at:
            self._review(now)
        self._window[adapter] += 1
        if adapter in self._named:
            return adapter
        if len(self._named) < self.top_k and len(self._ever_named) < self.max_names:
            self._name(adapter)
            return adapter
        return OTHER

    def peek(self, adapter: str | None) -> str:
        """The current label value, without counting a request."""
        if not adapter:
            return BASE
        return adapter if adapter in self._named else OTHER

    @property
    def named(self) -> frozenset[str]:
        return frozenset(self._named)

    @property
    def frozen(self) -> bool:
        """True once `max_names` names were given out: the named set no longer changes."""
        return len(self._ever_named) >= self.max_names

    def _name(self, adapter: str) -> None:
        self._named.add(adapter)
        self._ever_named.add(adapter)

    def _review(self, now: float) -> None:
        window, self._window = self._window, Counter()
        self._review_at = now + self.review_s
        if self.top_k == 0 or self.frozen:
            return
        busiest = [a for a, _ in window.most_common(self.top_k)]
        busiest_set = set(busiest)
        challengers = [a for a in busiest if a not in self._named]
        # Least requested first; ties broken by name so a review is deterministic.
        weakest = sorted((a for a in self._named if a not in busiest_set), key=lambda a: (window[a], a))
        for challenger, incumbent in zip(challengers, weakest):
            if self.frozen or window[challenger] < HYSTERESIS * max(window[incumbent], 1):
                break
            self._named.discard(incumbent)
            self._name(challenger)
