"""The router's own count of requests it has sent to each replica and not seen finish.

Replica stats arrive once per stats period, so during a burst every decision would
see the same stale queue and send everything to the same "least-loaded" replica.
The router knows what it has just sent, so it counts it; `replica_load` takes the
larger of this count and the reported one.
"""

from __future__ import annotations


class InflightTracker:
    """Per-replica in-flight counter. Plain dict, no locking: the Ray Serve router
    runs on one asyncio event loop, and the simulator is single-threaded.

    The caller must pair every `on_assign` with exactly one `on_finish` (success,
    error or cancellation alike), and call `forget` when a replica leaves the fleet;
    a count never goes below zero, so a stray `on_finish` cannot make a replica look
    emptier than idle.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def on_assign(self, replica_id: str) -> None:
        """A request was sent to `replica_id`."""
        self._counts[replica_id] = self._counts.get(replica_id, 0) + 1

    def on_finish(self, replica_id: str) -> None:
        """A request sent to `replica_id` finished, failed or was cancelled."""
        remaining = self._counts.get(replica_id, 0) - 1
        if remaining > 0:
            self._counts[replica_id] = remaining
        else:
            self._counts.pop(replica_id, None)

    def count(self, replica_id: str) -> int:
        return self._counts.get(replica_id, 0)

    def forget(self, replica_id: str) -> None:
        """Drop a replica that left the fleet (its requests will never finish here)."""
        self._counts.pop(replica_id, None)

    def total(self) -> int:
        return sum(self._counts.values())

    def as_dict(self) -> dict[str, int]:
        """A copy of the non-zero counts, for metrics and debugging."""
        return dict(self._counts)
