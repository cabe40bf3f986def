"""Chunks cross Ray together when several are ready, never later than alone."""

import asyncio

import pytest

from deployments.serve.coalesce import coalesced


async def _source(items, gate: asyncio.Event | None = None, log: list | None = None):
    try:
        for i, item in enumerate(items):
            if gate is not None and i == 1:
                await gate.wait()  # the first item alone, then a burst
            yield item
    finally:
        if log is not None:
            log.append("source closed")


async def _collect(agen):
    return [item async for item in agen]


def test_ready_strings_are_joined_and_other_items_keep_their_place():
    async def scenario():
        gate = asyncio.Event()
        out = []
        stream = coalesced(_source(["head", "a", "b", "c", 7, "d"], gate))
        first = await stream.__anext__()
        out.append(first)
        gate.set()
        await asyncio.sleep(0)  # the reader runs ahead
        out += [item async for item in stream]
        return out

    out = asyncio.run(scenario())
    assert out[0] == "head"  # the first chunk is not held back
    assert out[1:] == ["abc", 7, "d"]


def test_a_source_failure_reaches_the_consumer_after_the_text_before_it():
    async def failing():
        yield "x"
        yield "y"
        raise RuntimeError("engine died")

    async def scenario():
        got = []
        with pytest.raises(RuntimeError, match="engine died"):
            async for item in coalesced(failing()):
                got.append(item)
        return got

    assert "".join(asyncio.run(scenario())) == "xy"


def test_cancelling_the_consumer_cancels_the_source_and_waits_for_its_cleanup():
    log = []

    async def endless():
        try:
            while True:
                await asyncio.sleep(0.01)
                yield "t"
        except asyncio.CancelledError:
            log.append("source cancelled")
            raise

    async def scenario():
        async def consume():
            async for _ in coalesced(endless()):
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return list(log)

    assert asyncio.run(scenario()) == ["source cancelled"]
