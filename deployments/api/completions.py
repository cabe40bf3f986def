"""POST /v1/completions and /v1/chat/completions: one request, one readable pipeline.

    authenticate        the key -> a Principal (401), its request rate (429)
    read the body       capped and with a deadline, under a cap on concurrent reads (413, 408, 503)
    check the request   vLLM's own protocol models, strict integers (400 naming the field)
    resolve the model   a served base, or an adapter version the caller may use and its
                        base (404, 400); the request is checked against that base's limits
    admit               a slot in the ingress's admission cap (503), per-request limits
                        (400), the key's token budget (429)
    call the engine     the base's own engine deployment; one retry on another of its
                        replicas if the first died before answering
    account             the bill: the engine's usage when the answer ends, or its report
                        when the client left mid-generation

The body is read before an admission slot is taken, so a slow client holds a read
slot (bounded, with a deadline), never an admission slot. Errors are raised as
lorafleet's typed errors and mapped to HTTP once, by the app's exception handler.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from adapters.errors import LorafleetError
from deployments.api.body import read_capped
from deployments.api.context import ApiContext
from deployments.api.http_errors import to_http_error
from deployments.api.relay import CLIENT_CLOSED, Outcome, collect_json, relay_sse
from deployments.api.request_checks import check_max_tokens, check_request, parse_json_object, requested_model
from deployments.engine.protocol import Endpoint, EngineCall
from deployments.errors import EngineDead, Overloaded
from deployments.observability import metrics
from deployments.tenancy.admission import Ticket
from deployments.tenancy.billing import Bill
from deployments.tenancy.keys import Principal
from deployments.tenancy.request_limits import Admission, check_limits

logger = logging.getLogger(__name__)

REPLICA_HEADER = "x-lorafleet-replica"
ATTEMPTS_HEADER = "x-lorafleet-attempts"  # present (value 2) when a dead replica's request was retried


class Completions:
    def __init__(self, ctx: ApiContext):
        self.ctx = ctx

    async def handle(self, request: Request, endpoint: Endpoint) -> Response:
        observed = metrics.RequestObservation(endpoint.value)
        try:
            response = await self._pipeline(request, endpoint, observed)
        except LorafleetError as err:
            observed.finish(to_http_error(err).status)
            raise
        except asyncio.CancelledError:
            observed.finish(CLIENT_CLOSED)
            raise
        except BaseException:
            observed.finish(500)
            raise
        if not isinstance(response, StreamingResponse):  # a stream is finished by its relay
            observed.finish(response.status_code)
        return response

    async def _pipeline(self, request: Request, endpoint: Endpoint, observed: metrics.RequestObservation) -> Response:
        ctx = self.ctx
        principal = ctx.authenticate(request)
        await ctx.count_request(principal)
        body = await self._read_body(request, observed)
        check_request(body, endpoint, max_model_len=ctx.longest_context)
        target = await asyncio.to_thread(ctx.catalog.resolve, requested_model(body), principal)
        view, adapter = ctx.view(target.base), target.adapter
        if view.engine.max_model_len < ctx.longest_context:
            check_max_tokens(body, endpoint, view.engine.max_model_len)  # this base's own context length
        observed.resolved(adapter.served_id if adapter else None, model=target.base)
        gate = ctx.admissions[target.base]
        ticket = gate.try_enter()
        observed.admission_decided()
        if ticket is None:
            raise Overloaded(
                f"The fleet cannot start this request within {ctx.config.server.max_queue_wait_s:g} s "
                "(server.max_queue_wait_s); retry after the Retry-After seconds.", retry_after_s=gate.retry_after_s(),
                server_timing=observed.server_timing(admitted=False))
        try:
            admitted = await self._admit(body, endpoint, principal, target.base)
            bill = ctx.new_bill(principal, adapter.name if adapter else target.base, admitted.reservation, base=target.base)
            call = EngineCall(endpoint, admitted.body, adapter, uuid.uuid4().hex, ctx.ingress_id, base=target.base)
            return await self._answer(call, bill, admitted.prompt_tokens, observed, ticket)
        except BaseException:
            ticket.release()
            raise

    async def _read_body(self, request: Request, observed: metrics.RequestObservation) -> dict:
        ctx = self.ctx
        reader = ctx.readers.try_enter()
        if reader is None:
            observed.admission_decided()
            raise Overloaded(f"This server is reading {ctx.readers.limit} request bodies already; retry shortly.",
                             server_timing=observed.server_timing(admitted=False))
        try:
            raw = await read_capped(request, limit=ctx.config.server.max_request_bytes,
                                    deadline_s=ctx.config.server.body_read_timeout_s, setting="server.max_request_bytes")
        finally:
            reader.release()
        return parse_json_object(raw)

    async def _admit(self, body: dict, endpoint: Endpoint, principal: Principal, base: str) -> "_Admitted":
        """server.limits (400 naming the limit) and the key's token budget (429), with the
        base's tokenizer and context length."""
        ctx = self.ctx
        limits = ctx.config.server.limits
        counter = None
        if limits.max_prompt_tokens is not None or principal.tokens_per_minute is not None or ctx.counts_prompts:
            counter = await ctx.prompt_counter(base)
        admission: Admission = await asyncio.to_thread(
            check_limits, body, endpoint,
            max_tokens=limits.max_tokens, max_n=limits.max_n, max_prompt_tokens=limits.max_prompt_tokens,
            max_model_len=ctx.view(base).engine.max_model_len, count_prompt=counter,
        )
        reservation = await ctx.reserve_tokens(principal, admission.max_tokens_reserved)
        return _Admitted(admission.body, reservation, admission.prompt_tokens)

    async def _open(self, call: EngineCall) -> tuple[object, dict[str, str]]:
        """Open the engine stream; a replica that died before answering gets one retry
        elsewhere (the client has seen nothing). A started answer is never replayed."""
        headers: dict[str, str] = {}
        try:
            stream = await self.ctx.engine.open(call)
        except EngineDead as err:
            logger.warning("engine replica %s died before answering; retrying once elsewhere", err.replica)
            stream = await self.ctx.engine.open(call, avoid_replica=err.replica)
            headers[ATTEMPTS_HEADER] = "2"
        headers[REPLICA_HEADER] = stream.head.replica_id
        return stream, headers

    async def _answer(self, call: EngineCall, bill: Bill, prompt_tokens: int | None,
                      observed: metrics.RequestObservation, ticket: Ticket) -> Response:
        try:
            stream, headers = await self._open(call)
        except BaseException:
            bill.refund()
            raise
        outcome = Outcome(call.request_id, prompt_tokens)
        pending = self.ctx.pending_bills
        if stream.head.streaming:
            headers["Server-Timing"] = observed.server_timing()  # engine: to the stream's head
            relay = relay_sse(stream, outcome, observed=observed, bill=bill, pending=pending, on_close=ticket.release)
            # A stream dropped before its first chunk never runs the relay's `finally`.
            weakref.finalize(relay, _abandon_unstarted, stream, outcome, bill, pending, ticket)
            return StreamingResponse(relay, media_type="text/event-stream", headers=headers)
        try:
            body = await collect_json(stream, outcome, bill=bill, pending=pending)
        finally:
            ticket.release()
        headers["Server-Timing"] = observed.server_timing()  # engine: to the whole answer
        return Response(body, status_code=stream.head.status, media_type="application/json", headers=headers)


class _Admitted:
    __slots__ = ("body", "reservation", "prompt_tokens")

    def __init__(self, body, reservation, prompt_tokens):
        self.body = body
        self.reservation = reservation
        self.prompt_tokens = prompt_tokens


def _abandon_unstarted(stream, outcome: Outcome, bill: Bill, pending, ticket: Ticket) -> None:
    outcome.bill_abandoned(stream, bill, pending)  # nothing if the relay already billed it
    ticket.release()
