"""The engine replica as a Ray Serve deployment: thin glue around `VLLMEngine`.

Ray Serve gives it three hooks that matter: `record_routing_stats` (what the request
router sees of this replica), `check_health` (a dead engine fails it, so Serve
replaces the replica instead of letting it answer errors forever) and the streaming
handle call `generate`.
"""

from __future__ import annotations

import asyncio
import logging

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from adapters.validation import AdapterSpec
from deployments.adapter_store import open_adapter_store
from deployments.observability import metrics
from deployments.config import LorafleetConfig
from deployments.engine.protocol import Endpoint
from deployments.engine.vllm_engine import VLLMEngine

logger = logging.getLogger(__name__)


@serve.deployment(name="EngineReplica")
class EngineReplica:
    async def __init__(self, config: dict, controller: DeploymentHandle | None = None):
        self.config = LorafleetConfig.model_validate(config)
        metrics.configure(self.config)
        context = serve.get_replica_context()
        replica_id = context.replica_id.unique_id
        node_id = ray.get_runtime_context().get_node_id()
        self._store = open_adapter_store(self.config)
        self.engine = VLLMEngine(self.config, replica_id, node_id=node_id, materialize=self._store.materialize)
        await self.engine.start()
        self._controller = controller
        self._gpus = metrics.GpuMonitor.for_replica(replica_id)  # None without a GPU: no GPU metrics
        self._reporter = asyncio.get_running_loop().create_task(self._report_forever())
        logger.info("engine replica %s ready on node %s", replica_id, node_id)

    async def _report_forever(self) -> None:
        """Push stats to the fleet controller and the metrics gauges; a failed report is
        retried next period (the controller may be restarting), never fatal to serving."""
        period = self.config.deployment.stats_report_period_s
        while True:
            try:
                stats = self.engine.stats()
                metrics.publish_replica_stats(stats)
                if self._gpus is not None:
                    await self._gpus.publish()
                if self._controller is not None:
                    desired = await self._controller.report.remote(stats.to_dict())
                    if desired is not None:
                        await self.engine.reconcile(desired["gpu"], desired["cpu"], self._store.resolve)
            except Exception as err:  # noqa: BLE001 - any failure: try again next period
                logger.warning("stats report to the fleet controller failed: %s", err)
            await asyncio.sleep(period)

    async def generate(self, endpoint: Endpoint, body: dict, adapter: AdapterSpec | None, avoid_replica: str | None = None):
        """`avoid_replica` is for the request router (a retry names the replica that died)."""
        async for item in self.engine.generate(endpoint, body, adapter):
            yield item

    def record_routing_stats(self) -> dict:
        return self.engine.stats().to_dict()

    async def stats(self) -> dict:
        return self.engine.stats().to_dict()

    async def check_health(self) -> None:
        await self.engine.check_health()

    def __del__(self):
        reporter = getattr(self, "_reporter", None)
        if reporter is not None:
            reporter.cancel()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
