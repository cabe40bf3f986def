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
from collections.abc import AsyncIterator

from adapters.errors import AdapterInvalid, AdapterLoadError, AdapterNotFound
from adapters.validation import AdapterSpec
from cluster.residency import ResidencyTracker
from cluster.stats import ReplicaStats
from deployments.config import LorafleetConfig
from deployments.engine.base import Engine
from deployments.engine.resources import parallel_args
from deployments.engine.protocol import PARAM_NAMES, AbortedUsage, Endpoint, EngineCall, FinalUsage, ResponseHead, error_body
from deployments.engine.usage_meter import UsageMeter
from deployments.engine.vllm_plugin import plugin_environment, plugin_state
from deployments.errors import EngineDead
from deployments.observability import metrics

logger = logging.getLogger(__name__)

MAX_UNLOADABLE_REPORTED = 256  # bounds the stats payload after many deletes
MAX_COUNTED_ADAPTERS = 4096  # per-adapter counters kept (the most recently used): bounded stats
MAX_ABORTED_PENDING = 10_000  # aborted-usage reports waiting for the replica to send them


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
        "--stream-interval", str(e.stream_interval),
        "--dtype", e.dtype,
        "--seed", str(e.seed),
    ]
    if e.enforce_eager:
        args.append("--enforce-eager")
    if config.deployment.replica_gpus > 0:
        args += ["--gpu-memory-utilization", str(e.gpu_memory_utilization)]
    return args + parallel_args(config)  # a tensor/pipeline-parallel engine over the replica's placement group


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
    env.update(plugin_environment(emulated_read_ms=config.adapters.fetch_latency_ms))
    if config.deployment.engine_threads:
        env["OMP_NUM_THREADS"] = str(config.deployment.engine_threads)
    return env


class _StatsSink:
    """Receives vLLM's per-step scheduler stats (through a StatLogger) for the replica."""

    def __init__(self, residency: ResidencyTracker, replica_id: str = "", meter: UsageMeter | None = None):
        self.residency = residency
        self.replica_id = replica_id
        self.meter = meter
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0
        self.tokens = BoundedCounter(MAX_COUNTED_ADAPTERS)
        self.generated_tokens = 0  # exact, from finished requests: the fleet's tokens/s (`lorafleet serve`, `top`)

    def record_step(self, scheduler_stats) -> None:
        self.running = scheduler_stats.num_running_reqs
        self.waiting = scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs
        self.kv_cache_usage = scheduler_stats.kv_cache_usage
        running = scheduler_stats.running_lora_adapters
        self.residency.ran(running)
        # One decode step produces one token per running request: a cheap per-adapter
        # token-rate estimate for the placement's demand model (prefill not counted).
        self.tokens.add(running)

    def record_finished(self, finished) -> None:
        """Engine requests that ended: what they produced goes to the usage meter (for
        lorafleet requests that are being stopped, see UsageMeter)."""
        self.generated_tokens += sum(f.num_generation_tokens for f in finished)
        if self.meter is not None:
            for f in finished:
                self.meter.produced(f.request_id, f.num_prompt_tokens, f.num_generation_tokens)


class BoundedCounter(dict):
    """Counts per key, keeping the `limit` most recently counted keys: per-adapter counts
    over every version ever requested would otherwise grow for a replica's whole life
    (the demand estimator treats a dropped key that comes back as a counter reset)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def add(self, keys) -> None:
        for key in keys:
            self[key] = self.pop(key, 0) + 1  # re-inserted: most recent last
        while len(self) > self.limit:
            del self[next(iter(self))]


def _stat_logger_factory(sink: _StatsSink):
    from vllm.v1.metrics.loggers import StatLoggerBase

    class ReplicaStatLogger(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
            if scheduler_stats is not None:
                sink.record_step(scheduler_stats)
            if iteration_stats is not None and iteration_stats.finished_requests:
                sink.record_finished(iteration_stats.finished_requests)
                metrics.observe_finished_requests(sink.replica_id, iteration_stats.finished_requests)

        def log_engine_initialized(self):
            pass

    return ReplicaStatLogger


class VLLMEngine(Engine):
    """One engine per replica. `generate` yields a ResponseHead, then body strings."""

    def __init__(self, config: LorafleetConfig, replica_id: str, node_id: str = "", store=None):
        self.config = config
        # spec -> a pinned local folder vLLM can read: the store downloads (S3) or copies a
        # published version into the node cache, checking every file's sha256 first, and
        # its cache collector never removes a pinned folder. The pin is held while the LoRA
        # is registered: vLLM reads the folder again after evicting it from host memory.
        self._pin = store.pin if store is not None else _unpinned
        self._pins: dict[str, object] = {}  # served id -> its CachePin
        self.replica_id = replica_id
        self.node_id = node_id
        self.residency = metrics.ObservedResidency(config.engine.max_loras, config.engine.max_cpu_loras, replica_id)
        self._meter = UsageMeter()
        self._sink = _StatsSink(self.residency, replica_id, self._meter)
        self._requests = BoundedCounter(MAX_COUNTED_ADAPTERS)
        self._loading: set[str] = set()
        self._lora_ids = itertools.count(1)
        self._lora_locks: dict[str, asyncio.Lock] = {}
        self._registered: dict[str, tuple[int, str]] = {}  # served id -> (lora_int_id, fingerprint)
        # Served id -> requests past `ensure_adapter` that have not ended: their LoRA is in
        # vLLM's batch, so its registration (lora_int_id, pin) must not change under them.
        self._in_flight: dict[str, int] = {}
        self.engine = None
        self.desired: tuple[str, ...] = ()
        # Adapters placement asked for that failed to load (deleted from the store,
        # corrupted, invalid), most recent last; reported so the planner stops placing
        # them. One that later loads (a request for a re-published version) leaves it.
        self._unloadable: dict[str, None] = {}
        # Fingerprints of adapter contents vLLM refused, here or on any replica (the
        # controller spreads them): refused at once, never handed to vLLM again.
        self._unservable: set[str] = set()
        self._newly_unservable: list[str] = []  # refused here since the replica last told the controller
        self._aborted: list[AbortedUsage] = []

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
        loggers = [_stat_logger_factory(self._sink)]
        if self.config.observability.vllm_metrics:
            loggers.append(RayPrometheusStatLogger)
        self.engine = AsyncLLM.from_engine_args(engine_args, stat_loggers=loggers)
        _meter_aborts(self.engine, self._meter)
        metrics.record_plugin_state(self.replica_id, plugin_state())
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
            generated_tokens=self._sink.generated_tokens,
            desired=self.desired,
            unloadable=tuple(self._unloadable),
            healthy=self.engine is not None and not self.engine.errored,
            ts=time.time(),
        )

    def mark_unservable(self, fingerprints: list[str]) -> None:
        self._unservable.update(fingerprints)

    def take_unservable(self) -> list[str]:
        taken, self._newly_unservable = self._newly_unservable, []
        return taken

    def take_aborted(self) -> list[AbortedUsage]:
        taken, self._aborted = self._aborted, []
        return taken

    async def ensure_adapter(self, spec: AdapterSpec) -> None:
        """Make sure the adapter version is in the engine's host-memory cache.

        Adapters are keyed by `spec.served_id` (`name@version` for a published version),
        so two versions are two LoRAs to vLLM. The first use of an id registers it under
        a fresh lora_int_id; a changed fingerprint under the same id (a legacy folder
        rewritten in place) registers the new weights under a new id and drops the old
        one, so stale weights are never served. The files come from `materialize`
        (verified against the manifest's sha256; a corrupted version raises
        AdapterLoadError and is never added). An adapter the residency mirror says was
        evicted from the CPU cache is read again (and pays `adapters.fetch_latency_ms`
        inside the engine when that is emulated, see `vllm_plugin`).

        Weights vLLM refuses (validation let through something the engine cannot use)
        make the adapter unservable fleet-wide: AdapterInvalid (400) here, its
        fingerprint reported to the controller, and every replica refuses it from then
        on instead of retrying it elsewhere. If loading it killed the engine, the
        request still gets AdapterInvalid (not EngineDead), so the ingress does not
        retry it onto a second engine."""
        key = spec.served_id
        if spec.fingerprint and spec.fingerprint in self._unservable:
            raise AdapterInvalid(f"The adapter `{key}` cannot be loaded by the engine; it will not be served.", param="model")
        current = self._registered.get(key)
        if current and current[1] == spec.fingerprint and key in self.residency.cpu:
            return
        lock = self._lora_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                await self._load_locked(spec, key)
        finally:
            if not lock.locked() and not lock._waiters:  # type: ignore[attr-defined]
                self._lora_locks.pop(key, None)  # bounded: no lock kept per version ever seen

    async def _load_locked(self, spec: AdapterSpec, key: str) -> None:
        current = self._registered.get(key)
        fresh = current is None or current[1] != spec.fingerprint
        if not fresh and key in self.residency.cpu:
            return
        from vllm.lora.request import LoRARequest

        self._loading.add(key)
        started = time.perf_counter()
        try:
            try:
                pin = await asyncio.to_thread(self._pin, spec)
            except AdapterLoadError:
                metrics.record_adapter_load_failure(self.replica_id, "store")
                raise
            lora_id = next(self._lora_ids) if fresh else current[0]
            request = LoRARequest(lora_name=key, lora_int_id=lora_id, lora_path=str(pin.path))
            try:
                await self.engine.add_lora(request)
            except BaseException:
                pin.release()
                raise
        except (AdapterLoadError, AdapterInvalid):
            raise
        except Exception as err:  # vLLM raises plain exceptions for weights it cannot use
            metrics.record_adapter_load_failure(self.replica_id, "refused")
            self._unservable.add(spec.fingerprint)
            self._newly_unservable.append(spec.fingerprint)
            if self.engine.errored:
                logger.error("adapter %s killed the engine while loading; it is now unservable fleet-wide", key)
            else:
                logger.error("engine refused adapter %s (%s); it is now unservable fleet-wide", key, err)
            raise AdapterInvalid(f"The adapter `{key}` cannot be loaded by the engine; it will not be served.",
                                 param="model") from err
        finally:
            self._loading.discard(key)
        if fresh and current is not None:
            # New weights under a served id that has requests in flight: they hold the old
            # lora_int_id under the same lora_name, which vLLM must never see in one batch
            # (see `_forget_evicted`); nor may their LoRA be removed, or its folder unpinned,
            # while vLLM may read it again. New requests for the id wait on its lock.
            await self._drained(key)
            await self.engine.remove_lora(current[0])
        self._forget_evicted()
        previous = self._pins.pop(key, None)
        if previous is not None:
            previous.release()
        self._pins[key] = pin
        self._models.lora_requests[key] = request
        self._registered[key] = (lora_id, spec.fingerprint)
        self.residency.loaded(key)
        self._unloadable.pop(key, None)
        elapsed = time.perf_counter() - started
        metrics.observe_adapter_load(self.replica_id, elapsed)
        logger.info("adapter %s loaded in %.3fs", key, elapsed)

    def _forget_evicted(self) -> None:
        """Registrations of adapters vLLM's LRU dropped from host memory: the next use
        registers them afresh, so these tables never outgrow the engine's cache (by more
        than the adapters with requests in flight).

        Never one with requests in flight: its next use would register it under a second
        lora_int_id with the same lora_name while they still run under the first, and
        vLLM 0.32's worker collects a step's LoRAs in a set keyed by name
        (`LoRARequest.__hash__`, `InputBatch.make_lora_inputs`), so it activates only one
        of the two ids while the step's token mapping holds both: `convert_mapping` raises
        KeyError on the other and the engine dies (the overload bench, 2026-12-02). A kept
        registration keeps its id; vLLM reads the (still pinned) folder again if needed."""
        for key in [k for k in self._registered
                    if k not in self.residency.cpu and k not in self._loading and k not in self._in_flight]:
            del self._registered[key]
            self._models.lora_requests.pop(key, None)
            pin = self._pins.pop(key, None)
            if pin is not None:
                pin.release()  # the node cache may collect it now

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

    async def generate(self, call: EngineCall) -> AsyncIterator[object]:
        """Run one OpenAI request; yield a ResponseHead, then the body (SSE lines or JSON),
        then its FinalUsage. If the caller cancels (its client left), vLLM stops the
        request and what it had produced is queued for `take_aborted`."""
        self._meter.track(call.request_id)
        result = None
        inner = self._generate(call)
        try:
            async for item in inner:
                if isinstance(item, _Started):
                    result = item.result
                    continue
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            if result is not None and hasattr(result, "aclose"):
                await result.aclose()  # vLLM's own cleanup aborts its requests (metered)
            await inner.aclose()
            prompt, completion = self._meter.forget(call.request_id)
            self._aborted.append(AbortedUsage(call.request_id, call.ingress_id, prompt, completion))
            del self._aborted[:-MAX_ABORTED_PENDING]
            raise
        finally:
            self._meter.forget(call.request_id)

    async def _drained(self, key: str, poll_s: float = 0.05) -> None:
        """Wait until no request for `key` is in flight."""
        while self._in_flight.get(key):
            await asyncio.sleep(poll_s)

    def _hold(self, key: str) -> None:
        self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def _release(self, key: str) -> None:
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)

    async def _generate(self, call: EngineCall) -> AsyncIterator[object]:
        """`_serve` with the request's adapter held (see `_in_flight`) from the moment it
        is registered until the request ends, stopped or not. The hold starts only after
        `ensure_adapter`, so a load waiting for old requests to drain never waits for a
        request that itself waits for that load."""
        held = []
        inner = self._serve(call, held)
        try:
            async for item in inner:
                yield item
        finally:
            await inner.aclose()
            for key in held:
                self._release(key)

    async def _serve(self, call: EngineCall, held: list[str]) -> AsyncIterator[object]:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        endpoint, body, adapter = call.endpoint, call.body, call.adapter
        try:
            if adapter is not None:
                await self.ensure_adapter(adapter)
                self._hold(adapter.served_id)  # no await since ensure_adapter returned
                held.append(adapter.served_id)
                body = {**body, "model": adapter.served_id}
            else:
                body = {**body, "model": self.config.model.served_name}
            request_cls = CompletionRequest if endpoint is Endpoint.COMPLETIONS else ChatCompletionRequest
            request = request_cls.model_validate(body)
            self._requests.add([adapter.served_id if adapter else ""])
            serving = self._serving[endpoint]
            # vLLM leaves the final token usage on the probe, and names its engine
            # requests after the probe's X-Request-Id (our id: the usage meter's key).
            usage = metrics.usage_probe(call.request_id)
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
            yield _Started(result)
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


class _Unpinned:
    """A folder used in place (no store: tests, a legacy flat adapter)."""

    def __init__(self, path):
        self.path = path

    def release(self) -> None:
        pass


def _unpinned(spec):
    return _Unpinned(spec.path)


class _Started:
    """Internal marker: the streaming generator vLLM returned (closed on cancellation)."""

    __slots__ = ("result",)

    def __init__(self, result):
        self.result = result


_warned_meter = False


def _meter_aborts(engine, meter: UsageMeter) -> None:
    """Wrap the engine's `abort` so that, just before vLLM drops an engine request, what
    it produced (prompt length, generated tokens) goes to the usage meter. vLLM calls
    `self.abort` when a request's consumer is cancelled, so this sees every stop.

    It reads vLLM 0.32's output-processor state (`request_states`, `parent_requests`,
    `external_req_ids`, `RequestState.stats.num_generation_tokens`); if a vLLM version
    changed those, it logs one warning and meters nothing, and the ingress bills what
    it saw instead (deployments.tenancy.billing)."""
    real_abort = engine.abort

    async def metered_abort(request_id, internal: bool = False):
        global _warned_meter
        try:
            processor = engine.output_processor
            ids = [request_id] if isinstance(request_id, str) else list(request_id)
            for rid in ids:
                for state in _engine_request_states(processor, rid, internal):
                    generated = state.stats.num_generation_tokens if state.stats is not None else 0
                    meter.produced(state.external_req_id, state.prompt_len, generated)
        except (AttributeError, KeyError, TypeError) as err:
            if not _warned_meter:
                _warned_meter = True
                logger.warning("cannot read vLLM's request state to meter aborted requests (%s); aborted requests "
                               "are billed from the ingress's count", err)
        await real_abort(request_id, internal)

    engine.abort = metered_abort


def _engine_request_states(processor, request_id: str, internal: bool) -> list:
    if not internal:
        return [s for i in processor.external_req_ids.get(request_id, ()) for s in _engine_request_states(processor, i, True)]
    state = processor.request_states.get(request_id)
    if state is not None:
        return [state]
    parent = processor.parent_requests.get(request_id)
    if parent is None:
        return []
    return [processor.request_states[c] for c in parent.child_requests if c in processor.request_states]


def _final_usage(probe) -> FinalUsage | None:
    """The usage vLLM left on the probe (see metrics.usage_probe), if the request completed."""
    usage = getattr(getattr(probe.state, "request_metadata", None), "final_usage_info", None)
    if usage is None:
        return None
    return FinalUsage(usage.prompt_tokens or 0, usage.completion_tokens or 0)


def _openai_code(status: int) -> str:
    return {400: "invalid_value", 404: "model_not_found", 503: "overloaded"}.get(status, "internal_error")
