"""The API's clients (deployments.api.clients) over Ray Serve deployment handles.

All Ray lives here: a call goes out as `handle.options(stream=True,
multiplexed_model_id=<adapter>)` so request routers see the adapter, and whatever Ray
raises (a dead actor, a full queue, a replica's own exception wrapped in a
RayTaskError) comes back as one of lorafleet's typed errors (`failures`).
"""

from __future__ import annotations

from ray.serve.handle import DeploymentHandle

from deployments.engine.protocol import AbortedUsage, EngineCall, ResponseHead
from deployments.errors import EngineDead
from deployments.serve.failures import classify_engine_failure


class RayEngineStream:
    """An engine replica's answer after its head; iteration errors become typed errors."""

    def __init__(self, stream, head: ResponseHead):
        self._stream = stream
        self.head = head

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        try:
            async for item in self._stream:
                yield item
        except Exception as err:  # noqa: BLE001 - Ray's exceptions: typed from here on
            raise classify_engine_failure(err) from err

    def cancel(self) -> None:
        self._stream.cancel()


class RayEngineClient:
    """One handle per base's engine deployment: a call goes to the deployment of its base
    (`call.base`), whose own router picks the replica, so an adapter never reaches
    another base's engines."""

    def __init__(self, engines: dict[str, DeploymentHandle]):
        self.engines = engines
        self._only = next(iter(engines.values())) if len(engines) == 1 else None

    def _handle(self, base: str) -> DeploymentHandle:
        handle = self.engines.get(base) or self._only
        if handle is None:
            raise KeyError(f"no engine deployment for base {base!r}")  # the catalog resolves only served bases
        return handle

    async def open(self, call: EngineCall, *, avoid_replica: str | None = None) -> RayEngineStream:
        adapter = call.adapter.served_id if call.adapter else ""
        handle = self._handle(call.base).options(stream=True, multiplexed_model_id=adapter)
        stream = handle.generate.remote(call, avoid_replica=avoid_replica)
        try:
            head = await stream.__anext__()
        except Exception as err:  # noqa: BLE001 - Ray's exceptions: typed
            stream.cancel()
            raise classify_engine_failure(err) from err
        if not isinstance(head, ResponseHead):
            stream.cancel()
            raise EngineDead(f"engine replica answered with an unexpected {type(head).__name__}")
        return RayEngineStream(stream, head)


class RayFleetClient:
    def __init__(self, controller: DeploymentHandle):
        self.controller = controller

    async def replicas(self) -> list[dict]:
        return await self.controller.snapshot.remote()

    async def placement(self) -> dict:
        return await self.controller.placement.remote()

    async def take_aborted_usage(self, ingress_id: str, wait_s: float, held_back: dict[str, int] | None = None) -> list[AbortedUsage]:
        return await self.controller.take_aborted_usage.remote(ingress_id, wait_s, held_back)
