"""Relay one engine answer to the client, and bill it by how it ended.

A stream is relayed chunk by chunk; the engine's closing `FinalUsage` goes to the bill,
never to the client, and `data: [DONE]` is held back until it arrived (a client may
hang up as soon as it reads [DONE]). A failure after the first byte ends the stream
with an OpenAI error event and [DONE], never a hang. A client that goes away stops the
replica's generation (`stream.cancel()`); the engine then reports what it had produced
and the bill waits for that report in `PendingBills` (deployments.tenancy.billing).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

from adapters.errors import LorafleetError
from deployments.api.clients import EngineStream
from deployments.api.http_errors import to_http_error
from deployments.engine.protocol import FinalUsage
from deployments.observability.metrics import RequestObservation
from deployments.tenancy.billing import Bill, PendingBills

CLIENT_CLOSED = 499  # the status a request is counted with when its client went away (nginx's)

# An SSE event carrying at least one choice: each holds one or more generated tokens, so
# their count is a lower bound on the completion tokens the client received.
_CHOICE_EVENT = re.compile(r'"choices":\s*\[\s*\{')


class Outcome:
    """How one engine answer ended, for its bill."""

    __slots__ = ("request_id", "prompt_tokens", "events", "usage", "ended")

    def __init__(self, request_id: str, prompt_tokens: int | None):
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens or 0
        self.events = 0  # choice-carrying SSE events relayed
        self.usage: FinalUsage | None = None
        self.ended = False  # billed (or handed to PendingBills): later endings do nothing

    def seen(self) -> FinalUsage:
        """What demonstrably left the engine: the counted prompt and one token per event."""
        return FinalUsage(self.prompt_tokens, self.events)

    def bill_finished(self, bill: Bill) -> None:
        """The answer ended (completed, or failed after producing something)."""
        if self.ended:
            return
        self.ended = True
        if self.usage is not None:
            bill.charge(self.usage)
        elif self.events:
            bill.charge(self.seen())
        else:
            bill.refund()

    def bill_abandoned(self, stream: EngineStream, bill: Bill, pending: PendingBills) -> None:
        """The client went away first: stop the generation and wait for the engine's count."""
        if self.ended:
            return
        self.ended = True
        stream.cancel()
        if self.usage is not None:  # it had completed; only [DONE] was still on its way
            bill.charge(self.usage)
        else:
            pending.expect(self.request_id, bill, self.seen())


async def relay_sse(
    stream: EngineStream,
    outcome: Outcome,
    *,
    observed: RequestObservation,
    bill: Bill,
    pending: PendingBills,
    on_close: Callable[[], None],
) -> AsyncIterator[str]:
    finished = False
    done = None  # the `data: [DONE]` chunk, held back until the stream (and its usage) ended
    try:
        async for chunk in stream:
            if isinstance(chunk, FinalUsage):
                outcome.usage = chunk
                continue
            if observed.ttft_s is None:
                observed.first_chunk()
            if chunk.rstrip().endswith("data: [DONE]"):
                # Held back with any events it travels with, until the usage arrived.
                outcome.events += len(_CHOICE_EVENT.findall(chunk))
                done = chunk
                continue
            outcome.events += len(_CHOICE_EVENT.findall(chunk))  # several events may travel together
            yield chunk
        finished = True
        if done is not None:
            yield done
    except LorafleetError as err:  # the client already has a 200: report in-band
        finished = True
        http = to_http_error(err)
        observed.status = http.status
        yield f"data: {http.body}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if finished:
            outcome.bill_finished(bill)
        else:
            outcome.bill_abandoned(stream, bill, pending)
        observed.finish(None if finished else CLIENT_CLOSED)
        on_close()


async def collect_json(stream: EngineStream, outcome: Outcome, *, bill: Bill, pending: PendingBills) -> str:
    """A non-streamed answer: the whole body, billed with the engine's usage. If the
    client leaves while the engine works (this coroutine is cancelled), the generation
    is stopped and billed from the engine's report."""
    chunks: list[str] = []
    try:
        async for chunk in stream:
            if isinstance(chunk, FinalUsage):
                outcome.usage = chunk
            else:
                chunks.append(chunk)
    except asyncio.CancelledError:
        outcome.bill_abandoned(stream, bill, pending)
        raise
    except BaseException:
        bill.refund()  # the client gets an error and no answer
        raise
    outcome.bill_finished(bill)
    return "".join(chunks)
