"""The router's own count of requests it has sent to each replica and not seen finish.

Replica stats arrive once per stats period, so during a burst every decision would
see the same stale queue and send everything to the same "least-loaded" replica.
The router knows what it has just sent, so it counts it; `replica_load` takes the
larger of this count and the reported one.

It also counts per adapter, which tells which adapters each replica is running right
now: vLLM runs at most `max_loras` distinct adapters in one batch, so a request for
another adapter waits until one of them has no request left (`SlotScorer`).
"""

from __future__ import annotations

from collections.abc import Mapping

_NONE: Mapping[str, int] = {}


class InflightTracker:
    """Per-replica (and per replica and adapter) in-flight counter. Plain dicts, no
    locking: the Ray Serve router runs on one asyncio event loop, and the simulator
    is single-threaded.

    The caller must pair every `on_assign` with exactly one `on_finish` for the same
    replica and adapter (success, error or cancellation alike), and call `forget`
    when a replica leaves the fleet; a count never goes below zero, so a stray
    `on_finish` cannot make a replica look emptier than idle. `adapter` None or ""
    is a base-model request: counted in the replica's load, not as an adapter.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._adapters: dict[str, dict[str, int]] = {}
        self._total = 0

    def on_assign(self, replica_id: str, adapter: str | None = None) -> None:
        """A request (for `adapter`) was sent to `replica_id`."""
        self._counts[replica_id] = self._counts.get(replica_id, 0) + 1
        self._total += 1
        if adapter:
            per_adapter = self._adapters.setdefault(replica_id, {})
            per_adapter[adapter] = per_adapter.get(adapter, 0) + 1

    def on_finish(self, replica_id: str, adapter: str | None = None) -> None:
        """A request (for `adapter`) sent to `replica_id` finished, failed or was cancelled."""
        if self._counts.get(replica_id, 0) > 0:
            self._total -= 1
        _decrement(self._counts, replica_id)
        if adapter:
            per_adapter = self._adapters.get(replica_id)
            if per_adapter is not None:
                _decrement(per_adapter, adapter)
                if not per_adapter:
                    del self._adapters[replica_id]

    def count(self, replica_id: str) -> int:
        return self._counts.get(replica_id, 0)

    def active_adapters(self, replica_id: str) -> Mapping[str, int]:
        """Adapter -> requests in flight on `replica_id` (read-only view; do not keep)."""
        return self._adapters.get(replica_id, _NONE)

    def forget(self, replica_id: str) -> None:
        """Drop a replica that left the fleet (its requests will never finish here)."""
        self._total -= self._counts.pop(replica_id, 0)
        self._adapters.pop(replica_id, None)

    def total(self) -> int:
        """All in-flight requests, O(1)."""
        return self._total

    def as_dict(self) -> dict[str, int]:
        """A copy of the non-zero counts, for metrics and debugging."""
        return dict(self._counts)


def _decrement(counts: dict[str, int], key: str) -> None:
    remaining = counts.get(key, 0) - 1
    if remaining > 0:
        counts[key] = remaining
    else:
        counts.pop(key, None)
