"""The OpenAI-compatible HTTP ingress as a Ray Serve deployment: glue only.

It builds the API's context (`deployments.api.context`) with clients over the engine
deployments' handles (one per base model) and the controller's, serves `deployments.api.app.build_api(ctx)` as its ASGI app
(Serve's late-bound ingress: `__serve_build_asgi_app__`), and runs one background task
that bills requests whose clients left mid-generation with the engines' reports.
Everything a request goes through is in `deployments/api/`, testable without Ray.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.adapter_store import open_adapter_store
from deployments.api.app import build_api
from deployments.api.context import build_context
from deployments.config import LorafleetConfig
from deployments.observability import metrics
from deployments.serve.clients import RayEngineClient, RayFleetClient

logger = logging.getLogger(__name__)


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    async def __init__(self, config: dict, engines: dict[str, DeploymentHandle], controller: DeploymentHandle):
        """`engines`: base served name -> that base's engine deployment."""
        self.config = LorafleetConfig.model_validate(config)
        metrics.configure(self.config)
        ingress_id = serve.get_replica_context().replica_id.unique_id
        self.ctx = build_context(
            self.config, open_adapter_store(self.config),
            engine=RayEngineClient(engines), fleet=RayFleetClient(controller), ingress_id=ingress_id,
        )
        self._collector = asyncio.get_running_loop().create_task(self.ctx.collect_aborted_usage())

    def __serve_build_asgi_app__(self):
        return build_api(self.ctx)

    def __del__(self):
        collector = getattr(self, "_collector", None)
        if collector is not None:
            collector.cancel()
        ctx = getattr(self, "ctx", None)
        if ctx is not None:
            ctx.close()  # bills what still waits and writes the ledger: a clean restart loses no usage
