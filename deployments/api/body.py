"""Read a request body without trusting its sender: capped, with a deadline, and for
uploads spooled to disk.

Why each bound: a declared `Content-Length` can lie or be absent (chunked bodies), so
the cap is enforced on the bytes as they arrive, and the connection is abandoned the
moment it is passed (no "read it all, then check"); a client that trickles a body
byte by byte would otherwise hold memory and a slot for as long as it likes, so the
whole read has a deadline; an adapter upload can be hundreds of MB, so it goes to a
temporary file in chunks and never sits in memory whole.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from starlette.requests import ClientDisconnect, Request

from adapters.errors import PayloadTooLarge
from deployments.errors import InvalidRequest, RequestTimeout

_FLUSH_BYTES = 1 << 20  # spooled uploads are written in ~1 MiB blocks, off the event loop


def _too_large(limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes ({setting}).")


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidRequest("The Content-Length header is not a number.")
    return int(raw)


async def _timed(coro, deadline_s: float, limit: int):
    try:
        return await asyncio.wait_for(coro, timeout=deadline_s)
    except asyncio.TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {deadline_s:g} s (server.body_read_timeout_s); "
            f"send it at once (at most {limit} bytes)."
        ) from None
    except ClientDisconnect:
        raise InvalidRequest("The client closed the connection before the request body was complete.") from None


async def read_capped(request: Request, *, limit: int, deadline_s: float, setting: str) -> bytes:
    """The whole body, or PayloadTooLarge (413, naming `setting`) as soon as it passes
    `limit` bytes, or RequestTimeout (408) if it takes longer than `deadline_s`."""
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise _too_large(limit, setting)

    async def read() -> bytes:
        raw = bytearray()
        async for chunk in request.stream():
            if len(raw) + len(chunk) > limit:
                raise _too_large(limit, setting)
            raw += chunk
        return bytes(raw)

    return await _timed(read(), deadline_s, limit)


async def spool_capped(request: Request, target: Path, *, limit: int, deadline_s: float, setting: str) -> int:
    """Write the body to `target` (created, mode 0600) in blocks; same bounds as
    `read_capped`. Returns the number of bytes written; memory stays at ~1 MiB."""
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise _too_large(limit, setting)

    async def spool() -> int:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            written, block = 0, bytearray()
            async for chunk in request.stream():
                written += len(chunk)
                if written > limit:
                    raise _too_large(limit, setting)
                block += chunk
                if len(block) >= _FLUSH_BYTES:
                    await asyncio.to_thread(out.write, bytes(block))
                    block.clear()
            if block:
                await asyncio.to_thread(out.write, bytes(block))
        return written

    return await _timed(spool(), deadline_s, limit)


def replay_file(path: Path, chunk_bytes: int = 256 * 1024):
    """An ASGI `receive` that plays a spooled body back in chunks (read off the event
    loop), so Starlette's multipart parser can run over a file instead of memory."""
    handle = open(path, "rb")  # noqa: SIM115 - closed when the replay ends

    async def receive() -> dict:
        if handle.closed:
            return {"type": "http.disconnect"}
        data = await asyncio.to_thread(handle.read, chunk_bytes)
        more = len(data) == chunk_bytes
        if not more:
            handle.close()
        return {"type": "http.request", "body": data, "more_body": more}

    receive.close = handle.close  # type: ignore[attr-defined]
    return receive
