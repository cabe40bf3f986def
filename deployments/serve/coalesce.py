"""Send a stream's chunks across Ray in as few messages as the reader's pace allows.

Every item an engine replica yields crosses Ray as one object, and again from the
ingress to Ray's HTTP proxy: per token and per hop, a few hundred microseconds of
serialisation and scheduling, which on a busy machine adds up to more than the
engine's own step. So the replica reads the engine's stream in a task of its own and
sends, each time Ray asks for the next item, everything the engine produced since:
the first chunk goes out at once (no added latency to the first token), and under
load, when the engine runs ahead of the transport, chunks travel together. Strings
(SSE events, JSON) are joined; anything else (the head, the final usage) is passed
through alone and in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

_END = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


async def coalesced(source: AsyncIterator[object], *, max_joined: int = 256) -> AsyncIterator[object]:
    """`source`'s items, adjacent strings joined when several are ready at once.

    Cancelling the consumer cancels the task reading `source`, and waits for it: the
    source's own cleanup (vLLM aborting the request, the engine metering what it
    produced) has run when this generator's cancellation completes."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                queue.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
            queue.put_nowait(_Failed(err))
            return
        queue.put_nowait(_END)

    reader = asyncio.get_running_loop().create_task(pump())
    pending: object = None
    try:
        while True:
            item = pending if pending is not None else await queue.get()
            pending = None
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            if not isinstance(item, str):
                yield item
                continue
            parts = [item]
            while not queue.empty() and len(parts) < max_joined:
                following = queue.get_nowait()
                if isinstance(following, str):
                    parts.append(following)
                else:
                    pending = following  # a head, a usage, the end or a failure: after the text
                    break
            yield parts[0] if len(parts) == 1 else "".join(parts)
    finally:
        if not reader.done():
            reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
