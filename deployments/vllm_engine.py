"""A vLLM `AsyncLLM` with LoRA enabled, served through vLLM's own OpenAI layer.

The replica does not re-implement the OpenAI protocol: it builds vLLM's serving
objects (`OpenAIServingCompletion`, `OpenAIServingChat`) exactly as vLLM's API server
does, and only adds what a fleet needs on top: adapters resolved from the store on
first use, residency bookkeeping, and the replica stats the router reads.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator

from adapters.errors import AdapterInvalid, AdapterLoadError, AdapterNotFound, EngineDead
from adapters.validation import AdapterSpec
from cluster.residency import ResidencyTracker
from cluster.stats import ReplicaStats
from deployments import metrics
from deployments.config import LorafleetConfig
from deployments.protocol import Endpoint, FinalUsage, ResponseHead, error_body
from deployments.vllm_patches import EMULATED_READ_ENV
from deployments.request_checks import PARAM_NAMES

logger = logging.getLogger(__name__)

MAX_UNLOADABLE_REPORTED = 256  # bounds the stats payload after many deletes


def vllm_cli_args(config: LorafleetConfig) -> list[str]:
    """The engine's settings as vLLM CLI flags: parsed by vLLM's own parser, so every
    default and check of `vllm serve` applies unchanged."""
    e = config.engine
    args = [
        config.model.source,
        "--served-model-name", config.model.served_name,
        "--enable-lora",
        "--max-loras", str(e.max_loras),
        "--max-cpu-loras", str(e.max_cpu_loras),
        "--max-lora-rank", str(e.max_lora_rank),
        # Restricting LoRA to the projections keeps vLLM's LoRA logits processor
        # (the crashing path for batched prompt logprobs) out of the engine.
        "--lora-target-modules", *e.lora_target_modules,
        "--max-model-len", str(e.max_model_len),
        "--max-num-seqs", str(e.max_num_seqs),
        "--dtype", e.dtype,
        "--seed", str(e.seed),
    ]
    if e.enforce_eager:
        args.append("--enforce-eager")
    if config.deployment.replica_gpus > 0:
        args += ["--gpu-memory-utilization", str(e.gpu_memory_utilization)]
    return args


def parse_vllm_args(config: LorafleetConfig) -> argparse.Namespace:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    args = parser.parse_args(vllm_cli_args(config))
    args.model = args.model_tag
    return args


def engine_environment(config: LorafleetConfig) -> dict[str, str]:
    """Environment a replica process needs before vLLM is imported."""
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(config.engine.kv_cache_gib),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1" if os.path.isdir(config.model.source) else os.environ.get("HF_HUB_OFFLINE", "0"),
    }
    if config.adapters.fetch_latency_ms:
        env[EMULATED_READ_ENV] = str(config.adapters.fetch_latency_ms)
    if config.deployment.engine_threads:
        env["OMP_NUM_THREADS"] = str(config.deployment.engine_threads)
    return env


class _StatsSink:
    """Receives vLLM's per-step scheduler stats (through a StatLogger) for the replica."""

    def __init__(self, residency: ResidencyTracker, replica_id: str = ""):
        self.residency = residency
        self.replica_id = replica_id
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0
        self.tokens = Counter()

    def record_step(self, scheduler_stats) -> None:
        self.running = scheduler_stats.num_running_reqs
        self.waiting = scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs
        self.kv_cache_usage = scheduler_stats.kv_cache_usage
        running = scheduler_stats.running_lora_adapters
        self.residency.ran(running)
        # One decode step produces one token per running request: a cheap per-adapter
        # token-rate estimate for the placement's demand model (prefill not counted).
        self.tokens.update(running)


def _stat_logger_factory(sink: _StatsSink):
    from vllm.v1.metrics.loggers import StatLoggerBase

    class ReplicaStatLogger(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
            if scheduler_stats is not None:
                sink.record_step(scheduler_stats)
            if iteration_stats is not None and iteration_stats.finished_requests:
                metrics.observe_finished_requests(sink.replica_id, iteration_stats.finished_requests)

        def log_engine_initialized(self):
            pass

    return ReplicaStatLogger


class VLLMEngine:
    """One engine per replica. `generate` yields a ResponseHead, then body strings."""

    def __init__(self, config: LorafleetConfig, replica_id: str, node_id: str = "", materialize=None):
        self.config = config
        # spec -> local folder vLLM can read: the store downloads (S3) or copies a
        # published version into the node cache and checks every file's sha256 first.
        self._materialize = materialize or (lambda spec: spec.path)
        self.replica_id = replica_id
        self.node_id = node_id
        self.residency = metrics.ObservedResidency(config.engine.max_loras, config.engine.max_cpu_loras, replica_id)
        self._sink = _StatsSink(self.residency, replica_id)
        self._requests = Counter()
        self._loading: set[str] = set()
        self._lora_ids = itertools.count(1)
        self._lora_locks: dict[str, asyncio.Lock] = {}
        self._registered: dict[str, tuple[int, str]] = {}  # served id -> (lora_int_id, fingerprint)
        self.engine = None
        self.desired: tuple[str, ...] = ()
        # Adapters placement asked for that failed to load (deleted from the store,
        # corrupted, invalid), most recent last; reported so the planner stops placing
        # them. One that later loads (a request for a re-published version) leaves it.
        self._unloadable: dict[str, None] = {}

    async def start(self) -> None:
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

        args = parse_vllm_args(self.config)
        engine_args = AsyncEngineArgs.from_cli_args(args)
        # vLLM's own metrics (queue, running, KV cache, preemptions, ...) through Ray's metrics
        # API, as Ray Serve LLM exports them: scraped as `ray_vllm_*` with the replica's id in
        # `ReplicaId`. vLLM's default Prometheus logger would keep them in this process only.
        self.engine = AsyncLLM.from_engine_args(
            engine_args, stat_loggers=[_stat_logger_factory(self._sink), RayPrometheusStatLogger])
        state = State()
        await init_app_state(self.engine, state, args, supported_tasks=("generate",))
        self._models = state.openai_serving_models
        self._serving = {Endpoint.COMPLETIONS: state.openai_serving_completion, Endpoint.CHAT: state.openai_serving_chat}

    async def check_health(self) -> None:
        """Raise if the engine is dead, so Ray Serve replaces this replica."""
        if self.engine is None:
            raise EngineDead("engine not started")
        await self.engine.check_health()

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()

    def stats(self) -> ReplicaStats:
        # Scheduler stats arrive only with engine steps: once the engine goes idle the
        # last step's counts would linger. Unfinished requests are exact at any time.
        idle = self.engine is not None and self.engine.get_num_unfinished_requests() == 0
        return ReplicaStats(
            replica_id=self.replica_id,
            pid=os.getpid(),
            node_id=self.node_id,
            gpu_slots=self.config.engine.max_loras,
            cpu_slots=self.config.engine.max_cpu_loras,
            gpu_resident=self.residency.gpu_resident(),
            cpu_resident=self.residency.cpu_resident(),
            loading=tuple(sorted(self._loading)),
            queue_len=0 if idle else self._sink.waiting,
            running=0 if idle else self._sink.running,
            kv_cache_usage=self._sink.kv_cache_usage,
            per_adapter_requests=dict(self._requests),
            per_adapter_tokens=dict(self._sink.tokens),
            adapter_loads=self.residency.loads,
            desired=self.desired,
            unloadable=tuple(self._unloadable),
            healthy=self.engine is not None and not self.engine.errored,
            ts=time.time(),
        )

    async def ensure_adapter(self, spec: AdapterSpec) -> None:
        """Make sure the adapter version is in the engine's host-memory cache.

        Adapters are keyed by `spec.served_id` (`name@version` for a published version),
        so two versions are two LoRAs to vLLM. The first use of an id registers it under
        a fresh lora_int_id; a changed fingerprint under the same id (a legacy folder
        rewritten in place, or a deleted version number published again) registers the
        new weights under a new id and drops the old one, so stale weights are never
        served. The files come from `materialize` (verified against the manifest's
        sha256; a corrupted version raises AdapterLoadError and is never added). An
        adapter the residency mirror says was evicted from the CPU cache is read again
        (and pays `adapters.fetch_latency_ms` inside the engine when that is emulated,
        see `vllm_patches`)."""
        key = spec.served_id
        current = self._registered.get(key)
        if current and current[1] == spec.fingerprint and key in self.residency.cpu:
            return
        lock = self._lora_locks.setdefault(key, asyncio.Lock())
        async with lock:
            current = self._registered.get(key)
            fresh = current is None or current[1] != spec.fingerprint
            if not fresh and key in self.residency.cpu:
                return
            from vllm.lora.request import LoRARequest

            self._loading.add(key)
            started = time.perf_counter()
            try:
                path = await asyncio.to_thread(self._materialize, spec)
                lora_id = next(self._lora_ids) if fresh else current[0]
                request = LoRARequest(lora_name=key, lora_int_id=lora_id, lora_path=path)
                await self.engine.add_lora(request)
            except (AdapterLoadError, AdapterInvalid):
                raise
            except Exception as err:  # vLLM raises plain exceptions for bad files
                if self.engine.errored:
                    raise EngineDead(f"engine died while loading adapter {key!r}", replica=self.replica_id) from err
                raise AdapterLoadError(f"adapter {key!r} failed to load: {err}", retriable=False) from err
            finally:
                self._loading.discard(key)
            if fresh and current is not None:
                await self.engine.remove_lora(current[0])
            self._models.lora_requests[key] = request
            self._registered[key] = (lora_id, spec.fingerprint)
            self.residency.loaded(key)
            self._unloadable.pop(key, None)
            elapsed = time.perf_counter() - started
            metrics.observe_adapter_load(self.replica_id, elapsed)
            logger.info("adapter %s loaded in %.3fs", key, elapsed)

    async def reconcile(self, desired_gpu: list[str], desired_cpu: list[str], resolve) -> list[str]:
        """Move toward the placement controller's desired set: preload (store -> host
        memory) every desired adapter not yet held; return the names loaded.

        Eviction is left to the engine's LRU on purpose: a preloaded adapter becomes the
        most recently used, so the adapters nobody asked for go first, and vLLM has no
        "unpin", so pinning slots would need a reload to undo. Activation into a LoRA
        slot happens with the adapter's first request (~0.2 decode steps here)."""
        self.desired = tuple(desired_gpu) + tuple(desired_cpu)
        loaded = []
        for name in self.desired:
            if name in self.residency.cpu or name in self._loading:
                continue
            try:
                await self.ensure_adapter(resolve(name))
            except (AdapterNotFound, AdapterInvalid, AdapterLoadError) as err:
                logger.warning("placement asked for %s, which cannot be loaded: %s", name, err)
                self._unloadable.pop(name, None)
                self._unloadable[name] = None
                while len(self._unloadable) > MAX_UNLOADABLE_REPORTED:
                    self._unloadable.pop(next(iter(self._unloadable)))
                continue
            loaded.append(name)
        return loaded

    async def generate(self, endpoint: Endpoint, body: dict, adapter: AdapterSpec | None) -> AsyncIterator[object]:
        """Run one OpenAI request; yield a ResponseHead, then the body (SSE lines or JSON)."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        streaming = bool(body.get("stream"))
        try:
            if adapter is not None:
                await self.ensure_adapter(adapter)
                body = {**body, "model": adapter.served_id}
            else:
                body = {**body, "model": self.config.model.served_name}
            request_cls = CompletionRequest if endpoint is Endpoint.COMPLETIONS else ChatCompletionRequest
            request = request_cls.model_validate(body)
            self._requests[adapter.served_id if adapter else ""] += 1
            serving = self._serving[endpoint]
            usage = metrics.usage_probe()  # vLLM leaves the final token usage on it
            if endpoint is Endpoint.COMPLETIONS:
                result = await serving.create_completion(request, raw_request=usage)
            else:
                result = await serving.create_chat_completion(request, raw_request=usage)
        except EngineDeadError as err:
            raise EngineDead(f"engine on replica {self.replica_id} is dead: {err}", replica=self.replica_id) from err
        except (VLLMClientError, ValueError) as err:  # vLLM's request checks, e.g. prompt too long
            param = PARAM_NAMES.get(getattr(err, "parameter", None), getattr(err, "parameter", None))
            yield ResponseHead(400, self.replica_id, False)
            yield error_body(str(err), err_type="invalid_request_error", code="invalid_value", param=param)
            return

        if hasattr(result, "__aiter__"):
            yield ResponseHead(200, self.replica_id, True)
            async for chunk in result:
                yield chunk
            metrics.record_usage(self.replica_id, adapter.served_id if adapter else None, usage)
            if (final := _final_usage(usage)) is not None:
                yield final
            return
        error = getattr(result, "error", None)
        if error is not None:
            if self.engine.errored:
                raise EngineDead(f"engine on replica {self.replica_id} is dead: {error.message}", replica=self.replica_id)
            yield ResponseHead(int(error.code), self.replica_id, False)
            yield error_body(error.message, err_type=error.type, code=_openai_code(int(error.code)), param=error.param)
            return
        metrics.record_usage(self.replica_id, adapter.served_id if adapter else None, usage)
        yield ResponseHead(200, self.replica_id, False)
        yield result.model_dump_json()
        if (final := _final_usage(usage)) is not None:
            yield final


def _final_usage(probe) -> FinalUsage | None:
    """The usage vLLM left on the probe (see metrics.usage_probe), if the request completed."""
    usage = getattr(getattr(probe.state, "request_metadata", None), "final_usage_info", None)
    if usage is None:
        return None
    return FinalUsage(usage.prompt_tokens or 0, usage.completion_tokens or 0)


def _openai_code(status: int) -> str:
    return {400: "invalid_value", 404: "model_not_found", 503: "overloaded"}.get(status, "internal_error")
