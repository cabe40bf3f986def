"""The OpenAI-compatible HTTP ingress.

Thin on purpose: parse and check the request, map `model` to the base or an adapter
from the store, hand it to an engine replica with `multiplexed_model_id=<adapter>`
(so routers can see which adapter a request needs), and relay the replica's stream.
All errors leave here in the OpenAI shape, mapped once by `deployments.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import EngineDead, LorafleetError, Overloaded
from adapters.validation import AdapterSpec
from deployments.adapter_store import open_adapter_store
from deployments.admin_api import AdminAPI
from deployments import metrics
from deployments.admission import AdmissionGate, Ticket, ingress_admission_limit
from deployments.config import LorafleetConfig
from deployments.errors import HttpError, classify_engine_failure, to_http_error
from deployments.openapi import CHAT_REQUEST, COMPLETION_REQUEST, route_docs
from deployments.protocol import Endpoint, ResponseHead, error_body
from deployments.request_checks import check_request, parse_json_object, requested_model

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


class _TooLarge(Exception):
    def __init__(self, limit: int):
        self.limit = limit


async def _relay_sse(stream, observed: metrics.RequestObservation, on_close=None):
    """Relay SSE chunks; a failure mid-stream ends with an OpenAI error event, not a hang.
    A client that goes away cancels the replica's generation instead of leaving it
    to burn engine time for nobody. `observed` times the first chunk and the end;
    `on_close` runs once the stream is over, however it ended."""
    finished = False
    try:
        async for chunk in stream:
            if observed.ttft_s is None:
                observed.first_chunk()
            yield chunk
        finished = True
    except Exception as err:  # the client already has a 200: report in-band
        finished = True
        http = to_http_error(classify_engine_failure(err))
        observed.status = http.status
        yield f"data: {http.body}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if not finished:
            stream.cancel()
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

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @app.get("/fleet/replicas")
    async def fleet_replicas(self) -> dict:
        """Every live engine replica's latest stats (residency per tier, queue, loads)."""
        return {"replicas": await self.controller.snapshot.remote()}

    @app.get("/fleet/placement")
    async def fleet_placement(self) -> dict:
        """The placement controller's current desired placement (replica -> adapters per tier)."""
        return await self.controller.placement.remote()

    # The adapter registry (deployments/admin_api.py holds the logic).
    @app.post("/v1/adapters")
    async def create_adapter(self, request: Request) -> Response:
        return await self.admin.create(request)

    @app.get("/v1/adapters")
    async def list_adapters(self) -> Response:
        return await self.admin.list()

    @app.get("/v1/adapters/{model}/archive")
    async def adapter_archive(self, model: str) -> Response:
        return await self.admin.archive(model)

    @app.get("/v1/adapters/{model}")
    async def show_adapter(self, model: str) -> Response:
        return await self.admin.show(model)

    @app.delete("/v1/adapters/{model}")
    async def delete_adapter(self, model: str) -> Response:
        return await self.admin.delete(model)

    @app.get("/v1/models")
    async def list_models(self) -> dict:
        cards = [self._card(self.base_name, root=self.config.model.source, parent=None)]
        cards += [self._card(spec.name, root=spec.name, parent=self.base_name) for spec in self.store.list_valid()]
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{model:path}")
    async def get_model(self, model: str) -> Response:
        try:
            adapter = self._resolve(model)
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

    def _resolve(self, model: str) -> AdapterSpec | None:
        """None means the base model."""
        if model == self.base_name:
            return None
        return self.store.resolve(model)

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
        try:
            body = await self._read_body(request)
            adapter = self._resolve(requested_model(body))
            observed.resolved(adapter.served_id if adapter else None)
            check_request(body, endpoint, max_model_len=self.config.engine.max_model_len)
            return await self._call_engine(endpoint, body, adapter, observed, ticket)
        except _TooLarge as err:
            message = f"The request body is larger than the limit of {err.limit} bytes."
            return Response(error_body(message, err_type="invalid_request_error", code="request_too_large"), 413, media_type="application/json")
        except LorafleetError as err:
            return _error_response(to_http_error(err))

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
        ticket: Ticket,
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
            relay = _relay_sse(stream, observed, on_close=ticket.release)
            weakref.finalize(relay, ticket.release)  # a stream dropped before its first chunk never runs `finally`
            return StreamingResponse(relay, media_type="text/event-stream", headers=headers)
        try:
            chunks = [chunk async for chunk in stream]
        except Exception as err:
            raise classify_engine_failure(err) from err
        return Response("".join(chunks), status_code=head.status, media_type="application/json", headers=headers)
