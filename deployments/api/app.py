"""`build_api(ctx) -> FastAPI`: the OpenAI-compatible HTTP surface of one ingress replica.

Every route authenticates (when `server.auth.enabled`) and counts against the key's
request rate, /health alone excepted; `/docs`, `/redoc` and `/openapi.json` need a key
too, since they describe the server to whoever reads them. Routes raise lorafleet's
typed errors; one exception handler maps each to its OpenAI-style answer
(`deployments.api.http_errors`), and Starlette's and FastAPI's own errors (unknown
route, bad path parameter) get the same shape. Slow calls (the adapter store, the usage
ledger) run off the event loop.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import LorafleetError
from deployments.api.completions import Completions
from deployments.api.context import ApiContext
from deployments.api.http_errors import to_http_error
from deployments.api.openapi import CHAT_REQUEST, COMPLETION_REQUEST, route_docs
from deployments.api.registry import Registry
from deployments.engine.protocol import Endpoint, error_body
from deployments.errors import InvalidRequest
from deployments.tenancy.access import require_admin
from deployments.tenancy.keys import Principal
from deployments.tenancy.usage_report import usage_report


def _query_time(query, name: str) -> float | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequest(f"`{name}` must be a unix time in seconds, got {raw!r}.", param=name) from None


def build_api(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="lorafleet", description="OpenAI-compatible API over a fleet of LoRA adapters.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    completions = Completions(ctx)
    registry = Registry(ctx.store, ctx.config.adapters, ctx.uploads, body_timeout_s=ctx.config.server.body_read_timeout_s)

    async def caller(request: Request) -> Principal:
        """Authenticate and count one request against the key's rate (401, 429)."""
        principal = ctx.authenticate(request)
        await ctx.count_request(principal)
        return principal

    # ------------------------------------------------------------------ errors, once

    @app.exception_handler(LorafleetError)
    async def _lorafleet_error(request: Request, err: LorafleetError) -> Response:
        http = to_http_error(err)
        return Response(http.body, status_code=http.status, media_type="application/json", headers=http.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        body = error_body(f"{request.method} {request.url.path}: {exc.detail}", err_type="invalid_request_error", code=code)
        return Response(body, status_code=exc.status_code, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        body = error_body(f"Invalid value for `{param}`: {first.get('msg', 'invalid request')}.",
                          err_type="invalid_request_error", code="invalid_value", param=param)
        return Response(body, status_code=400, media_type="application/json")

    # ------------------------------------------------------------------ health, docs

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        await caller(request)
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        await caller(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title="lorafleet")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> Response:
        await caller(request)
        return get_redoc_html(openapi_url="/openapi.json", title="lorafleet")

    # ------------------------------------------------------------------ the fleet

    @app.get("/fleet/replicas")
    async def fleet_replicas(request: Request) -> JSONResponse:
        """Every live engine replica's latest stats (residency per tier, queue, loads). Admins
        only when auth is on: it names every tenant's resident adapters."""
        require_admin(await caller(request), "GET /fleet/replicas")
        return JSONResponse({"replicas": await ctx.fleet.replicas()})

    @app.get("/fleet/placement")
    async def fleet_placement(request: Request) -> JSONResponse:
        """The placement controller's current desired placement (replica -> adapters per tier)."""
        require_admin(await caller(request), "GET /fleet/placement")
        return JSONResponse(await ctx.fleet.placement())

    # ------------------------------------------------------------------ the registry

    @app.post("/v1/adapters")
    async def create_adapter(request: Request) -> JSONResponse:
        return JSONResponse(await registry.create(request, await caller(request)), status_code=201)

    @app.get("/v1/adapters")
    async def list_adapters(request: Request) -> JSONResponse:
        return JSONResponse(await registry.list(await caller(request)))

    @app.get("/v1/adapters/{model}/archive")
    async def adapter_archive(model: str, request: Request) -> Response:
        return await registry.archive(model, await caller(request))

    @app.get("/v1/adapters/{model}")
    async def show_adapter(model: str, request: Request) -> JSONResponse:
        return JSONResponse(await registry.show(model, await caller(request)))

    @app.delete("/v1/adapters/{model}")
    async def delete_adapter(model: str, request: Request) -> JSONResponse:
        return JSONResponse(await registry.delete(model, await caller(request)))

    # ------------------------------------------------------------------ models, usage

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(ctx.catalog.listing, await caller(request)))

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str, request: Request) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(ctx.catalog.describe, model, await caller(request)))

    @app.get("/v1/usage")
    async def usage(request: Request) -> JSONResponse:
        """The usage ledger: admins all rows (filters key, tenant, adapter, start, end);
        a tenant its own rows and, per adapter it owns, other tenants' use in aggregate."""
        principal = await caller(request)
        if ctx.ledger is None:
            raise InvalidRequest("The usage ledger is off on this server (server.usage.enabled).")
        q = request.query_params
        window = {k: _query_time(q, k) for k in ("start", "end")}

        def report() -> dict:
            owned = ctx.catalog.owned_by(principal.tenant)
            return usage_report(principal, ctx.ledger, owned, key_id=q.get("key"), tenant=q.get("tenant"),
                                adapter=q.get("adapter"), **window)

        return JSONResponse(await asyncio.to_thread(report))

    # ------------------------------------------------------------------ completions

    @app.post("/v1/completions", **route_docs(COMPLETION_REQUEST))
    async def create_completion(request: Request) -> Response:
        return await completions.handle(request, Endpoint.COMPLETIONS)

    @app.post("/v1/chat/completions", **route_docs(CHAT_REQUEST))
    async def create_chat_completion(request: Request) -> Response:
        return await completions.handle(request, Endpoint.CHAT)

    return app
