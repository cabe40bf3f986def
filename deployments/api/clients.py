"""What the API needs from the rest of the fleet, as interfaces.

The API never talks to Ray: the Ray Serve ingress (`deployments.serve.ingress`) hands
it an `EngineClient` over the engine deployment's handle and a `FleetClient` over the
controller's, and tests hand it fakes. Every failure crosses this boundary as one of
lorafleet's typed errors (EngineDead with the replica that died, Overloaded, ...),
never as a Ray exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from deployments.engine.protocol import AbortedUsage, EngineCall, ResponseHead


class EngineStream(Protocol):
    """An engine replica's answer after its ResponseHead: body strings, then FinalUsage."""

    head: ResponseHead

    def __aiter__(self) -> AsyncIterator[object]: ...

    def cancel(self) -> None:
        """Stop the replica's generation (it then reports what it produced)."""


class EngineClient(Protocol):
    async def open(self, call: EngineCall, *, avoid_replica: str | None = None) -> EngineStream:
        """Send `call` to a replica (never `avoid_replica` if another exists) and wait for
        its ResponseHead. Raises EngineDead (with `.replica`) if the replica died first."""


class FleetClient(Protocol):
    async def replicas(self) -> list[dict]:
        """Every live engine replica's latest stats."""

    async def placement(self) -> dict:
        """The placement controller's current plan."""

    async def take_aborted_usage(self, ingress_id: str, wait_s: float, held_back: dict[str, int] | None = None) -> list[AbortedUsage]:
        """Engine reports for requests of this ingress replica whose clients left;
        waits up to `wait_s` for the first one. `held_back`: requests this ingress
        holds without an engine seat or refused since its last call, per base (for the autoscaler)."""
