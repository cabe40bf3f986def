"""The OpenAI-compatible HTTP ingress.

Thin on purpose: parse and check the request, map `model` to the base or an adapter
from the store, hand it to an engine replica with `multiplexed_model_id=<adapter>`
(so routers can see which adapter a request needs), and relay the replica's stream.
All errors leave here in the OpenAI shape, mapped once by `deployments.api.http_errors`.

Tenancy (see README "Security"): every route but /health needs an API key when
`server.auth.enabled`; a tenant lists and uses only its own and public adapters;
per-key limits are checked before the engine is called; every completed request's
usage, as the engine reports it at the end of the stream, goes to the usage ledger.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import weakref
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import LorafleetError
from deployments.errors import EngineDead, InvalidRequest, Overloaded, RateLimited
from adapters.validation import AdapterSpec
from deployments.tenancy.access import can_use, require_admin
from deployments.adapter_store import open_adapter_store
from deployments.api.registry import AdminAPI
from deployments.observability import metrics
from deployments.tenancy.admission import AdmissionGate, Ticket, ingress_admission_limit
from deployments.tenancy.keys import KeyLimits, KeysFileWatcher, Principal, anonymous, bearer_token
from deployments.config import LorafleetConfig
from deployments.api.http_errors import HttpError, to_http_error
from deployments.serve.failures import classify_engine_failure
from deployments.tenancy.ledger import UsageLedger
from deployments.api.openapi import CHAT_REQUEST, COMPLETION_REQUEST, route_docs
from deployments.engine.protocol import Endpoint, FinalUsage, ResponseHead, error_body
from deployments.tenancy.ratelimit import KeyRateLimiter, Reservation
from deployments.api.request_checks import check_request, parse_json_object, requested_model
from deployments.tenancy.request_limits import PromptCounter, check_limits
from deployments.tenancy.usage_report import usage_report

logger = logging.getLogger(__name__)

REPLICA_HEADER = "x-lorafleet-replica"
ATTEMPTS_HEADER = "x-lorafleet-attempts"  # present (value 2) when a dead replica's request was retried
CLIENT_CLOSED = 499  # the status a request is counted with when its client went away (nginx's)

app = FastAPI(title="lorafleet", description="OpenAI-compatible API over a fleet of LoRA adapters.")


def _error_response(err: HttpError) -> Response:
    return Response(err.body, status_code=err.status, media_type="application/json", headers=err.headers)


@app.exception_handler(StarletteHTTPException)
async def _http_exception(request: Request, exc: StarletteHTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    body = error_body(f"{request.method} {request.url.path}: {exc.detail}", err_type="invalid_request_error", code=code)
    return Response(body, status_code=exc.status_code, media_type="application/json")


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's own parameter checks (path/query) answer in the OpenAI shape too."""
    first = exc.errors()[0] if exc.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    body = error_body(f"Invalid value for `{param}`: {first.get('msg', 'invalid request')}.", err_type="invalid_request_error",
                      code="invalid_value", param=param)
    return Response(body, status_code=400, media_type="application/json")


def _query_time(query, name: str) -> float | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequest(f"`{name}` must be a unix time in seconds, got {raw!r}.", param=name) from None


class _TooLarge(Exception):
    def __init__(self, limit: int):
        self.limit = limit


class _Accounting:
    """One admitted request's bookkeeping: when it ends, settle its token reservation
    with the engine's usage and record that usage in the ledger (and metrics)."""

    def __init__(self, ingress: "Ingress", principal: Principal, adapter: AdapterSpec | None, reservation: Reservation | None):
        self.ingress = ingress
        self.principal = principal
        self.adapter = adapter
        self.reservation = reservation

    def finish(self, usage: FinalUsage | None, *, ended: bool = True) -> None:
        """`usage` None: the request failed (nothing to bill, the reservation is given
        back) or, with `ended` False, its client went away mid-stream (kept)."""
        if usage is None:
            if ended:
                self.ingress.limiter.settle(self.reservation, 0)
            return
        self.ingress.limiter.settle(self.reservation, usage.prompt_tokens + usage.completion_tokens)
        name = self.adapter.name if self.adapter else None
        if self.ingress.ledger is not None:
            self.ingress.ledger.record(
                self.principal.key_id, self.principal.tenant, name or self.ingress.base_name,
                usage.prompt_tokens, usage.completion_tokens,
            )
        metrics.record_ledger_usage(self.principal.tenant, name, usage.prompt_tokens, usage.completion_tokens)


async def _relay_sse(stream, observed: metrics.RequestObservation, accounting: _Accounting, on_close=None):
    """Relay SSE chunks; a failure mid-stream ends with an OpenAI error event, not a hang.
    A client that goes away cancels the replica's generation instead of leaving it
    to burn engine time for nobody. `observed` times the first chunk and the end; the
    engine's closing FinalUsage goes to `accounting`, never to the client; `on_close`
    runs once the stream is over, however it ended."""
    finished = False
    usage = None
    done = None  # the `data: [DONE]` chunk, held back until the stream (and its usage) ended
    try:
        async for chunk in stream:
            if isinstance(chunk, FinalUsage):
                usage = chunk
                continue
            if observed.ttft_s is None:
                observed.first_chunk()
            if isinstance(chunk, str) and chunk.rstrip().endswith("data: [DONE]"):
                # A client may hang up as soon as it reads [DONE]; the engine's FinalUsage
                # comes after it, so send [DONE] last or that usage is lost to the ledger.
                done = chunk
                continue
            yield chunk
        finished = True
        if done is not None:
            yield done
    except Exception as err:  # the client already has a 200: report in-band
        finished = True
        http = to_http_error(classify_engine_failure(err))
        observed.status = http.status
        yield f"data: {http.body}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if not finished:
            stream.cancel()
        accounting.finish(usage, ended=finished)
        observed.finish(None if finished else CLIENT_CLOSED)
        if on_close is not None:
            on_close()


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(self, config: dict, engine: DeploymentHandle, controller: DeploymentHandle):
        self.config = LorafleetConfig.model_validate(config)
        metrics.configure(self.config)
        self.engine = engine
        self.controller = controller
        self.base_name = self.config.model.served_name
        self.store = open_adapter_store(self.config)
        self.admin = AdminAPI(self.store, self.config.adapters)
        self.created = int(time.time())
        d = self.config.deployment
        self.admission = AdmissionGate(
            ingress_admission_limit(
                configured=d.ingress_max_ongoing_requests,
                num_replicas=d.num_replicas,
                max_ongoing_requests=d.max_ongoing_requests,
                max_queued_requests=d.max_queued_requests,
            )
        )
        for entry in self.store.entries():
            if entry.error:
                logger.warning("adapter %s will not be served: %s", entry.name, entry.error)
        server = self.config.server
        self.default_limits = KeyLimits(
            requests_per_second=server.limits.requests_per_second, tokens_per_minute=server.limits.tokens_per_minute
        )
        self.keys = KeysFileWatcher(server.auth.keys_file, self.default_limits) if server.auth.enabled else None
        self.limiter = KeyRateLimiter(shares=self.config.deployment.ingress_replicas)
        self.ledger = None
        if server.usage.enabled:
            self.ledger = UsageLedger(self._ledger_path(), flush_period_s=server.usage.flush_period_s)
        # The tokenizer loads in the background (transformers import: seconds), at start
        # when prompt counts may be needed (a prompt limit, token budgets), else on first
        # need; only requests that need a prompt count wait for it.
        self._counter: concurrent.futures.Future | None = None
        if server.auth.enabled or server.limits.max_prompt_tokens or server.limits.tokens_per_minute:
            self._prompt_counter()

    def _ledger_path(self) -> str:
        """server.usage.ledger_path, else next to a local store (on its volume, so it
        survives restarts); an S3 store has no local volume: the node-local adapter
        cache is used, which a restart on another node does not keep (logged)."""
        if self.config.server.usage.ledger_path:
            return self.config.server.usage.ledger_path
        root = getattr(self.store, "root", None)
        if root is not None:
            return str(Path(root) / ".lorafleet" / "usage.sqlite")
        logger.warning("usage ledger kept in the node-local cache %s: set server.usage.ledger_path to a durable volume",
                       self.store.cache_dir)
        return str(Path(self.store.cache_dir) / "usage.sqlite")

    def _prompt_counter(self) -> concurrent.futures.Future:
        if self._counter is None:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tokenizer")
            self._counter = pool.submit(PromptCounter.load, self.config.model.source)
            pool.shutdown(wait=False)
        return self._counter

    def __del__(self):
        ledger = getattr(self, "ledger", None)
        if ledger is not None:
            ledger.close()  # writes what is still pending: a clean restart loses no usage

    def _principal(self, request: Request) -> Principal:
        if self.keys is None:
            return anonymous(self.default_limits)
        return self.keys.authenticate(bearer_token(request.headers.get("authorization")))

    def _visible(self, principal: Principal):
        return lambda entry: can_use(principal, entry)

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @app.get("/fleet/replicas")
    async def fleet_replicas(self, request: Request) -> Response:
        """Every live engine replica's latest stats (residency per tier, queue, loads). Admins
        only when auth is on: it names every tenant's resident adapters."""
        try:
            require_admin(self._principal(request), "GET /fleet/replicas")
        except LorafleetError as err:
            return _error_response(to_http_error(err))
        return JSONResponse({"replicas": await self.controller.snapshot.remote()})

    @app.get("/fleet/placement")
    async def fleet_placement(self, request: Request) -> Response:
        """The placement controller's current desired placement (replica -> adapters per tier)."""
        try:
            require_admin(self._principal(request), "GET /fleet/placement")
        except LorafleetError as err:
            return _error_response(to_http_error(err))
        return JSONResponse(await self.controller.placement.remote())

    # The adapter registry (deployments/api/registry.py holds the logic and the ownership rules).
    @app.post("/v1/adapters")
    async def create_adapter(self, request: Request) -> Response:
        return await self._admin(request, lambda principal: self.admin.create(request, principal))

    @app.get("/v1/adapters")
    async def list_adapters(self, request: Request) -> Response:
        return await self._admin(request, self.admin.list)

    @app.get("/v1/adapters/{model}/archive")
    async def adapter_archive(self, model: str, request: Request) -> Response:
        return await self._admin(request, lambda principal: self.admin.archive(model, principal))

    @app.get("/v1/adapters/{model}")
    async def show_adapter(self, model: str, request: Request) -> Response:
        return await self._admin(request, lambda principal: self.admin.show(model, principal))

    @app.delete("/v1/adapters/{model}")
    async def delete_adapter(self, model: str, request: Request) -> Response:
        return await self._admin(request, lambda principal: self.admin.delete(model, principal))

    async def _admin(self, request: Request, call) -> Response:
        try:
            principal = self._principal(request)
        except LorafleetError as err:
            return _error_response(to_http_error(err))
        return await call(principal)

    @app.get("/v1/models")
    async def list_models(self, request: Request) -> Response:
        try:
            principal = self._principal(request)
        except LorafleetError as err:
            return _error_response(to_http_error(err))
        cards = [self._card(self.base_name, root=self.config.model.source, parent=None)]
        cards += [
            self._card(spec.name, root=spec.name, parent=self.base_name)
            for spec in self.store.list_valid()
            if can_use(principal, spec)
        ]
        return JSONResponse({"object": "list", "data": cards})

    @app.get("/v1/usage")
    async def usage(self, request: Request) -> Response:
        """The usage ledger: admins all rows (filters key, tenant, adapter, start, end);
        a tenant its own rows and, per adapter it owns, other tenants' use in aggregate."""
        try:
            principal = self._principal(request)
            if self.ledger is None:
                raise InvalidRequest("The usage ledger is off on this server (server.usage.enabled).")
            q = request.query_params
            window = {k: _query_time(q, k) for k in ("start", "end")}
            owned = [e.name for e in self.store.entries() if e.owner is not None and e.owner == principal.tenant]
            report = await asyncio.to_thread(
                usage_report, principal, self.ledger, owned,
                key_id=q.get("key"), tenant=q.get("tenant"), adapter=q.get("adapter"), **window,
            )
        except LorafleetError as err:
            return _error_response(to_http_error(err))
        return JSONResponse(report)

    @app.get("/v1/models/{model:path}")
    async def get_model(self, model: str, request: Request) -> Response:
        try:
            adapter = self._resolve(model, self._principal(request))
        except LorafleetError as err:
            return _error_response(to_http_error(err))
        if adapter is None:
            return JSONResponse(self._card(self.base_name, root=self.config.model.source, parent=None))
        return JSONResponse(self._card(model, root=adapter.name, parent=self.base_name))

    @app.post("/v1/completions", **route_docs(COMPLETION_REQUEST))
    async def completions(self, request: Request) -> Response:
        return await self._serve(request, Endpoint.COMPLETIONS)

    @app.post("/v1/chat/completions", **route_docs(CHAT_REQUEST))
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request, Endpoint.CHAT)

    def _card(self, model_id: str, *, root: str, parent: str | None) -> dict:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "lorafleet", "root": root, "parent": parent}

    def _resolve(self, model: str, principal: Principal) -> AdapterSpec | None:
        """None means the base model. Adapters the principal may not use do not exist for it."""
        if model == self.base_name:
            return None
        return self.store.resolve(model, self._visible(principal))

    async def _read_body(self, request: Request) -> dict:
        limit = self.config.server.max_request_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _TooLarge(limit)
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise _TooLarge(limit)
        return parse_json_object(bytes(raw))

    async def _serve(self, request: Request, endpoint: Endpoint) -> Response:
        observed = metrics.RequestObservation(endpoint.value)
        ticket = self.admission.try_enter()
        if ticket is None:  # refused before reading the body: overload costs little
            limit = self.admission.limit
            response = _error_response(to_http_error(Overloaded(
                f"This server is at its limit of {limit} concurrent requests; retry shortly.", retry_after_s=1
            )))
            observed.finish(response.status_code)
            return response
        try:
            response = await self._respond(request, endpoint, observed, ticket)
        except BaseException as err:  # FastAPI answers 500; a cancelled request lost its client
            ticket.release()
            observed.finish(CLIENT_CLOSED if isinstance(err, asyncio.CancelledError) else 500)
            raise
        if not isinstance(response, StreamingResponse):  # a stream is finished (and released) by _relay_sse
            ticket.release()
            observed.finish(response.status_code)
        return response

    async def _respond(
        self, request: Request, endpoint: Endpoint, observed: metrics.RequestObservation, ticket: Ticket
    ) -> Response:
        principal = None
        try:
            principal = self._principal(request)
            self.limiter.admit(principal)  # before reading the body: a flood is refused cheaply
            body = await self._read_body(request)
            adapter = self._resolve(requested_model(body), principal)
            observed.resolved(adapter.served_id if adapter else None)
            check_request(body, endpoint, max_model_len=self.config.engine.max_model_len)
            body, reservation = await self._admit(body, endpoint, principal)
            accounting = _Accounting(self, principal, adapter, reservation)
            try:
                return await self._call_engine(endpoint, body, adapter, observed, ticket, accounting)
            except BaseException:
                accounting.finish(None)
                raise
        except RateLimited as err:
            metrics.record_rate_limited(principal.tenant, err.kind)
            return _error_response(to_http_error(err))
        except _TooLarge as err:
            message = f"The request body is larger than the limit of {err.limit} bytes."
            return Response(error_body(message, err_type="invalid_request_error", code="request_too_large"), 413, media_type="application/json")
        except LorafleetError as err:
            return _error_response(to_http_error(err))

    async def _admit(self, body: dict, endpoint: Endpoint, principal: Principal) -> tuple[dict, Reservation | None]:
        """Apply server.limits (400 naming the limit) and reserve the request's tokens
        against the key's tokens per minute (429). Returns the body to send."""
        limits = self.config.server.limits
        needs_count = limits.max_prompt_tokens is not None or principal.tokens_per_minute is not None
        counter = None
        if needs_count:
            try:
                counter = await asyncio.wrap_future(self._prompt_counter())
            except Exception as err:  # noqa: BLE001 - e.g. a hub tokenizer the ingress cannot fetch
                logger.error("cannot load the tokenizer of %s to count prompt tokens: %s", self.config.model.source, err)
                raise LorafleetError("The server cannot count prompt tokens (tokenizer unavailable); see its log.") from err
        admission = await asyncio.to_thread(
            check_limits, body, endpoint,
            max_tokens=limits.max_tokens, max_n=limits.max_n, max_prompt_tokens=limits.max_prompt_tokens,
            max_model_len=self.config.engine.max_model_len, count_prompt=counter,
        )
        return admission.body, self.limiter.reserve(principal, admission.max_tokens_reserved)

    async def _open(self, endpoint: Endpoint, body: dict, adapter: AdapterSpec | None, avoid: str | None):
        """Send the request to a replica and wait for its ResponseHead."""
        handle = self.engine.options(stream=True, multiplexed_model_id=adapter.served_id if adapter else "")
        stream = handle.generate.remote(endpoint, body, adapter, avoid_replica=avoid)
        try:
            head = await stream.__anext__()
        except Exception as err:
            stream.cancel()
            raise classify_engine_failure(err) from err
        if not isinstance(head, ResponseHead):
            raise EngineDead(f"engine replica answered with an unexpected {type(head).__name__}")
        return stream, head

    async def _call_engine(
        self, endpoint: Endpoint, body: dict, adapter: AdapterSpec | None, observed: metrics.RequestObservation,
        ticket: Ticket, accounting: _Accounting,
    ) -> Response:
        headers = {}
        try:
            stream, head = await self._open(endpoint, body, adapter, avoid=None)
        except EngineDead as err:
            # The replica died before answering, so the client has seen nothing: one more
            # try, steered away from the dead replica (Ray Serve also drops a dead actor
            # from its replica set). Never after the head: a started answer is not replayed.
            logger.warning("engine replica %s died before answering; retrying once elsewhere", err.replica)
            stream, head = await self._open(endpoint, body, adapter, avoid=err.replica)
            headers[ATTEMPTS_HEADER] = "2"
        headers[REPLICA_HEADER] = head.replica_id
        if head.streaming:
            relay = _relay_sse(stream, observed, accounting, on_close=ticket.release)
            weakref.finalize(relay, ticket.release)  # a stream dropped before its first chunk never runs `finally`
            return StreamingResponse(relay, media_type="text/event-stream", headers=headers)
        try:
            chunks = [chunk async for chunk in stream]
        except Exception as err:
            raise classify_engine_failure(err) from err
        accounting.finish(next((c for c in chunks if isinstance(c, FinalUsage)), None))
        body = "".join(c for c in chunks if not isinstance(c, FinalUsage))
        return Response(body, status_code=head.status, media_type="application/json", headers=headers)
