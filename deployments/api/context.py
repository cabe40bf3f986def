"""Everything one ingress replica's API works with, built once from the config.

`ApiContext` holds the request path's parts (the adapter catalog, the keys, the
limiters, the admission gates, the usage ledger, the bills waiting for an engine's
report) and the two clients to the rest of the fleet (`EngineClient`, `FleetClient`).
With several base models, what depends on a base is kept per base: its view of the
config (context length), its admission gate (a flood on one base never sheds another
base's requests), its tokenizer (prompt counts).
The Ray Serve ingress builds it with clients over its deployment handles; tests build
it with fakes, so the whole HTTP surface runs without Ray.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from adapters.store import AdapterStore
from deployments.api.clients import EngineClient, FleetClient
from deployments.api.models import ModelCatalog
from deployments.api.prompt_tokens import PromptCounter
from deployments.config import LorafleetConfig
from deployments.engine.protocol import FinalUsage
from deployments.errors import LorafleetError, RateLimited
from deployments.observability import metrics
from deployments.tenancy.admission import AdmissionGate, LatencyBoundedGate, ingress_admission_limit
from deployments.tenancy.billing import Bill, PendingBills
from deployments.tenancy.keys import KeyLimits, KeysFileWatcher, Principal, anonymous, bearer_token
from deployments.tenancy.ledger import UsageLedger
from deployments.tenancy.ratelimit import RateLimiter, Reservation
from deployments.tenancy.stores import open_ledger, open_limiter

logger = logging.getLogger(__name__)


@dataclass
class ApiContext:
    config: LorafleetConfig
    store: AdapterStore
    catalog: ModelCatalog
    engine: EngineClient
    fleet: FleetClient
    keys: KeysFileWatcher | None
    default_limits: KeyLimits
    limiter: RateLimiter  # in memory, or shared by the replicas (server.usage.backend: postgres)
    admissions: dict[str, LatencyBoundedGate]  # per base model
    readers: AdmissionGate  # request bodies being read at once
    uploads: AdmissionGate  # adapter uploads and imports being processed at once
    ledger: UsageLedger | None
    pending_bills: PendingBills
    ingress_id: str = ""
    counts_prompts: bool = False  # count every prompt (auth on: billing fallbacks need it)
    bases: dict[str, LorafleetConfig] = field(default_factory=dict)  # served name -> the base's view
    _counters: dict[str, concurrent.futures.Future] = field(default_factory=dict, repr=False)
    _slots_checked: float = field(default=0.0, repr=False)

    @property
    def admission(self) -> LatencyBoundedGate:
        """The first base's gate (a one-base fleet's only one)."""
        return next(iter(self.admissions.values()))

    def view(self, base: str) -> LorafleetConfig:
        return self.bases[base]

    @property
    def longest_context(self) -> int:
        """The largest max_model_len of any base: what a request is checked against before
        its model is resolved (then against its own base's)."""
        return max(view.engine.max_model_len for view in self.bases.values())

    # ------------------------------------------------------------------ callers

    def authenticate(self, request: Request) -> Principal:
        """The caller, or Unauthenticated (401). Auth off: everyone is the local admin."""
        if self.keys is None:
            return anonymous(self.default_limits)
        return self.keys.authenticate(bearer_token(request.headers.get("authorization")))

    async def count_request(self, principal: Principal) -> None:
        """One request against the key's requests per second (429), on every route."""
        try:
            await self.limiter.admit(principal)
        except RateLimited as err:
            metrics.record_rate_limited(principal.tenant, err.kind)
            raise

    async def reserve_tokens(self, principal: Principal, tokens: int) -> Reservation | None:
        try:
            return await self.limiter.reserve(principal, tokens)
        except RateLimited as err:
            metrics.record_rate_limited(principal.tenant, err.kind)
            raise

    def new_bill(self, principal: Principal, adapter: str, reservation: Reservation | None, base: str | None = None) -> Bill:
        def record(who: Principal, billed_adapter: str, usage) -> None:
            metrics.record_ledger_usage(who.tenant, billed_adapter, usage.prompt_tokens, usage.completion_tokens, model=base)

        return Bill(self.limiter, self.ledger, principal, adapter, reservation, on_billed=record)

    # ------------------------------------------------------------------ prompt tokens

    def start_prompt_counter(self, base: str | None = None) -> None:
        """Load a base's tokenizer in the background (transformers: seconds; an S3 or hub
        base: its tokenizer files fetched to the node first, the same copy the engines
        read); only requests that need a prompt count wait for it. None: every base."""
        for name in ([base] if base is not None else list(self.bases)):
            if name not in self._counters:
                _resolve_lazy_imports()
                view = self.bases[name]
                pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tokenizer")
                self._counters[name] = pool.submit(_load_counter, view)
                pool.shutdown(wait=False)

    async def prompt_counter(self, base: str | None = None) -> PromptCounter:
        base = base if base is not None else next(iter(self.bases))
        self.start_prompt_counter(base)
        try:
            return await asyncio.wrap_future(self._counters[base])
        except Exception as err:  # noqa: BLE001 - e.g. a hub tokenizer the ingress cannot fetch
            self._counters.pop(base, None)  # the next request tries again (the hub may be back)
            logger.error("cannot load the tokenizer of %s (%s) to count prompt tokens: %s", base,
                         self.bases[base].model.source, err)
            raise LorafleetError("The server cannot count prompt tokens (tokenizer unavailable); see its log.") from err

    # ------------------------------------------------------------------ lifetime

    async def collect_aborted_usage(self, wait_s: float = 5.0) -> None:
        """Forever: bill requests whose clients left mid-generation with the engine's
        report of what it produced; bills with no report by their deadline are billed
        what the ingress saw (PendingBills)."""
        while True:
            try:
                held_back = {base: gate.held_back() for base, gate in self.admissions.items()}
                reports = await self.fleet.take_aborted_usage(self.ingress_id, wait_s, held_back)
            except Exception as err:  # noqa: BLE001 - the controller restarts: try again
                logger.warning("fetching aborted requests' usage from the fleet controller failed: %s", err)
                reports = []
                await asyncio.sleep(wait_s)
            for report in reports:
                self.pending_bills.settle(report.request_id, FinalUsage(report.prompt_tokens, report.completion_tokens))
            self.pending_bills.expire()
            await self._refresh_engine_slots()

    async def _refresh_engine_slots(self) -> None:
        """Each admission gate's idea of its base's engine concurrency follows the base's
        live replica count (autoscaling changes it), at most every few seconds."""
        now = time.monotonic()
        if now - self._slots_checked < 5.0:
            return
        self._slots_checked = now
        try:
            live = await self.fleet.replicas()
        except Exception:  # noqa: BLE001 - the controller restarts: keep the last count
            return
        only = next(iter(self.bases)) if len(self.bases) == 1 else None
        counts: dict[str, int] = {}
        for stats in live:
            base = stats.get("base") or only
            counts[base] = counts.get(base, 0) + 1
        for base, replicas in counts.items():
            if base in self.admissions and replicas:
                self.admissions[base].set_slots(engine_slots(self.bases[base], replicas, self.config),
                                                floor=engines_fed(replicas, self.config))

    def close(self) -> None:
        """Shutdown: bill what still waits, write the ledger and the limiter's settlements."""
        self.pending_bills.flush()
        if self.ledger is not None:
            self.ledger.close()
        self.limiter.close()


def _resolve_lazy_imports() -> None:
    """transformers resolves its top-level names lazily, and that is not thread-safe: a
    tokenizer loading in the background thread while the request path imports vLLM's
    protocol (which imports transformers) failed now and then with a plain 500 or a
    cached "tokenizer unavailable" (ImportError on AutoTokenizer). Resolve them once, in
    the caller's thread, before any background load starts."""
    import transformers

    transformers.AutoTokenizer  # noqa: B018 - the attribute access is the import
    transformers.PreTrainedTokenizerFast  # noqa: B018


def _load_counter(view: LorafleetConfig) -> PromptCounter:
    from deployments.model_files import local_model_path

    return PromptCounter.load(local_model_path(view.model, view.deployment.model_cache_dir, weights=False))


def engine_slots(view: LorafleetConfig, replicas: int, fleet: LorafleetConfig | None = None) -> int:
    """Requests one base's engines run at once, this ingress replica's share."""
    ingress_replicas = (fleet or view).deployment.ingress_replicas
    return max(1, replicas * view.replica_max_ongoing_requests() // ingress_replicas)


def engines_fed(replicas: int, config: LorafleetConfig) -> int:
    """This ingress replica's share of one base's engine replicas (at least one)."""
    return max(1, -(-replicas // config.deployment.ingress_replicas))


def _admission_gate(config: LorafleetConfig, view: LorafleetConfig, clock: Callable[[], float]) -> LatencyBoundedGate:
    d, v = config.deployment, view.deployment
    admitted = ingress_admission_limit(configured=d.ingress_max_ongoing_requests, num_replicas=view.max_engine_replicas(),
                                       max_ongoing_requests=view.replica_max_ongoing_requests(),
                                       max_queued_requests=v.max_queued_requests)
    return LatencyBoundedGate(
        hard_limit=admitted, slots=engine_slots(view, v.num_replicas, config), max_wait_s=config.server.max_queue_wait_s,
        cold_queue=max(1, v.max_queued_requests // d.ingress_replicas), floor=engines_fed(v.num_replicas, config),
        latency_bound_s=config.server.max_added_latency_s, clock=clock)


def build_context(
    config: LorafleetConfig,
    store: AdapterStore,
    *,
    engine: EngineClient,
    fleet: FleetClient,
    ingress_id: str = "",
    clock: Callable[[], float] = time.monotonic,
) -> ApiContext:
    server = config.server
    limits = KeyLimits(requests_per_second=server.limits.requests_per_second,
                       tokens_per_minute=server.limits.tokens_per_minute)
    bases = config.bases()
    admissions = {name: _admission_gate(config, view, clock) for name, view in bases.items()}
    ledger = open_ledger(config, store, on_write_failure=metrics.record_ledger_write_failure) if server.usage.enabled else None
    ctx = ApiContext(
        config=config,
        store=store,
        catalog=ModelCatalog(store, {name: view.model.source for name, view in bases.items()}, int(time.time())),
        engine=engine,
        fleet=fleet,
        keys=KeysFileWatcher(server.auth.keys_file, limits) if server.auth.enabled else None,
        default_limits=limits,
        limiter=open_limiter(config, clock=clock, on_store_state=metrics.record_rate_limit_store),
        admissions=admissions,
        readers=AdmissionGate(sum(gate.limit for gate in admissions.values())),
        uploads=AdmissionGate(config.adapters.max_concurrent_uploads),
        ledger=ledger,
        pending_bills=PendingBills(server.usage.abort_report_timeout_s, clock=clock, on_estimated=metrics.record_estimated_usage),
        ingress_id=ingress_id,
        counts_prompts=server.auth.enabled,
        bases=bases,
    )
    if server.auth.enabled or server.limits.max_prompt_tokens or server.limits.tokens_per_minute:
        ctx.start_prompt_counter()
    for entry in store.entries():
        if entry.error:
            logger.warning("adapter %s will not be served: %s", entry.name, entry.error)
    return ctx
