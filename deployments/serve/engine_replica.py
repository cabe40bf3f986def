"""The engine replica as a Ray Serve deployment: thin glue around an `Engine`.

Each base model has its own deployment of this class (`deployments.app`); a replica
gets its base's view of the config (`LorafleetConfig.for_base`), fetches the base's
files to the node when they live in S3 or a hub (`engine.model_files`, before vLLM
starts; a wrong source fails the replica's start naming it), and says which base it
serves in its stats, so the controller plans each base's replicas separately.

Ray Serve gives it three hooks that matter: `record_routing_stats` (what the request
router sees of this replica), `check_health` (a dead engine fails it, so Serve
replaces the replica instead of letting it answer errors forever) and the streaming
handle call `generate`. The engine comes from an import path (`engine_factory`, vLLM
by default), so the same glue runs over a fake engine in the fast test tier.

Every `stats_report_period_s` it reports to the fleet controller and gets back the
adapters placement wants here and the adapter contents the fleet found unservable;
what the engine produced for requests stopped mid-generation goes to the controller
at once (the ingress waits for it to bill those requests).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.adapter_store import open_adapter_store
from deployments.config import LorafleetConfig
from adapters.errors import AdapterLoadError
from deployments.engine.base import VLLM_ENGINE, load_engine_factory
from deployments.engine.cpu_binding import bind_engine_threads
from deployments.model_files import local_model_path
from deployments.engine.protocol import AbortedUsage, EngineCall
from deployments.observability import metrics
from deployments.serve.autoscaling_policy import TARGET_METRIC
from deployments.serve.coalesce import coalesced

logger = logging.getLogger(__name__)

MAX_UNSENT_ABORTED = 10_000  # aborted-usage reports kept for a retry while the controller is unreachable


@serve.deployment(name="EngineReplica")
class EngineReplica:
    async def __init__(self, config: dict, controller: DeploymentHandle | None = None, engine_factory: str = VLLM_ENGINE):
        self._started_at = time.time()
        view = LorafleetConfig.model_validate(config)  # one base's view (LorafleetConfig.for_base)
        self.base = view.model.served_name
        local = await asyncio.to_thread(local_model_path, view.model, view.deployment.model_cache_dir)
        self.config = view.with_local_source(local)
        metrics.configure(self.config)
        context = serve.get_replica_context()
        replica_id = context.replica_id.unique_id
        node_id = ray.get_runtime_context().get_node_id()
        self._store = open_adapter_store(self.config)
        self._target_replicas: int | None = None  # the fleet controller's autoscaling target, relayed to Ray Serve
        d = self.config.deployment
        cores = bind_engine_threads(d.cpu_binding, local_rank=_local_rank(context), replica_cpus=d.replica_cpus,
                                    replica_gpus=d.replica_gpus, engine_threads=d.engine_threads)  # before the engine starts
        self.engine = load_engine_factory(engine_factory)(self.config, replica_id, node_id=node_id, store=self._store)
        await self.engine.start()
        self._ready_at = time.time()
        self._controller = controller
        self._gpus = metrics.GpuMonitor.for_replica(replica_id)  # None without a GPU: no GPU metrics
        self._background: set[asyncio.Task] = set()
        self._unsent_aborted: list[AbortedUsage] = []
        self._reporter = asyncio.get_running_loop().create_task(self._report_forever())
        logger.info("engine replica %s ready on node %s (engine threads on cores %s)", replica_id, node_id, cores or "vLLM's choice")

    async def _report_forever(self) -> None:
        """Push stats to the fleet controller and the metrics gauges; a failed report is
        retried next period (the controller may be restarting), never fatal to serving."""
        period = self.config.deployment.stats_report_period_s
        while True:
            try:
                stats = self._stats()
                metrics.publish_replica_stats(stats)
                if self._gpus is not None:
                    await self._gpus.publish()
                if self._controller is not None:
                    answer = await self._controller.report.remote(stats.to_dict(), self.engine.take_unservable())
                    self.engine.mark_unservable(answer.get("unservable", []))
                    self._target_replicas = answer.get("target_replicas")
                    desired = answer.get("desired")
                    if desired is not None:
                        await self.engine.reconcile(desired["gpu"], desired["cpu"], self._store.resolve)
                await self._send_aborted()
            except Exception as err:  # noqa: BLE001 - any failure: try again next period
                logger.warning("stats report to the fleet controller failed: %s", err)
            await asyncio.sleep(period)

    async def _send_aborted(self) -> None:
        """Send the engine's reports of aborted requests to the fleet controller. Reports
        whose send failed are kept and go with the next send (each one is an ingress's
        bill), at most MAX_UNSENT_ABORTED of them."""
        reports = self._unsent_aborted + self.engine.take_aborted()
        self._unsent_aborted = []
        if not reports or self._controller is None:
            return
        try:
            await self._controller.record_aborted_usage.remote(reports)
        except BaseException as err:
            self._unsent_aborted = (reports + self._unsent_aborted)[-MAX_UNSENT_ABORTED:]
            if not isinstance(err, Exception):
                raise  # cancelled: the replica is stopping
            logger.warning("sending %d aborted-request reports to the fleet controller failed (kept for the next "
                           "send): %s", len(reports), err)

    def _send_aborted_soon(self) -> None:
        """Send at once, from a task outside the cancelled request's context: Ray Serve
        counts a handle call made in a request's context as that request's child, and
        cancels it with the request, so the report was lost whenever the cancellation
        caught up with it (seen in CI: a client that left was never billed)."""
        task = asyncio.get_running_loop().create_task(self._send_aborted(), context=contextvars.Context())
        self._background.add(task)  # a reference until done: the loop keeps only weak ones
        task.add_done_callback(self._background.discard)

    async def generate(self, call: EngineCall, avoid_replica: str | None = None):
        """`avoid_replica` is for the request router (a retry names the replica that died).
        Chunks ready at once cross Ray together (`coalesce`)."""
        if call.adapter is not None and call.adapter.base and call.adapter.base != self.base:
            # The ingress calls each base's own deployment; reaching here is a bug. Refuse
            # rather than apply one base's LoRA to another's weights.
            raise AdapterLoadError(f"adapter `{call.adapter.served_id}` belongs to base {call.adapter.base!r}; this replica "
                                   f"serves {self.base!r}", retriable=False, param="model")
        stream = coalesced(self.engine.generate(call))
        try:
            async for item in stream:
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            await stream.aclose()  # the engine stops the request and meters what it produced
            self._send_aborted_soon()  # the ingress is waiting for this request's count to bill it
            raise

    def _stats(self):
        return dataclasses.replace(self.engine.stats(), base=self.base, started_at=self._started_at, ready_at=self._ready_at)

    def record_routing_stats(self) -> dict:
        return self._stats().to_dict()

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Ray Serve's custom-metrics hook: the controller's target, for the engine
        deployment's autoscaling policy (`deployments.serve.autoscaling_policy`)."""
        return {TARGET_METRIC: float(self._target_replicas)} if self._target_replicas else {}

    async def stats(self) -> dict:
        return self._stats().to_dict()

    async def check_health(self) -> None:
        await self.engine.check_health()

    def __del__(self):
        reporter = getattr(self, "_reporter", None)
        if reporter is not None:
            reporter.cancel()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def _local_rank(context) -> int | None:
    """The replica's rank among this deployment's replicas on its node (Ray Serve's
    ReplicaRank; None where Ray does not say)."""
    rank = getattr(context, "rank", None)
    local = getattr(rank, "local_rank", None)
    return local if isinstance(local, int) else None
