"""The resilience probe classifies what a client saw correctly (it is what the kill and
overload tests and benchmarks assert on), against canned HTTP responses."""

import asyncio
import json

import httpx
import pytest

from bench.harness import probe

ERROR = {"error": {"message": "gone", "type": "server_error", "param": None, "code": "engine_unavailable"}}


def _send(handler, body=None, timeout_s=5):
    async def run():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://test") as client:
            return await probe.send(client, body or {"model": "m", "prompt": "x", "stream": True}, 0.0, timeout_s)

    return asyncio.run(run())


def _sse(*events):
    return httpx.Response(200, text="".join(f"data: {e}\n\n" for e in events), headers={"content-type": "text/event-stream"})


def test_a_complete_stream_is_ok_and_a_cut_one_is_a_shaped_stream_cut():
    assert _send(lambda r: _sse('{"choices": []}', "[DONE]")).kind == probe.OK
    cut = _send(lambda r: _sse('{"choices": []}', json.dumps(ERROR), "[DONE]"))
    assert (cut.kind, cut.openai_shaped, cut.error_code) == (probe.STREAM_CUT, True, "engine_unavailable")


def test_a_stream_without_done_is_truncated():
    assert _send(lambda r: _sse('{"choices": []}')).kind == probe.TRUNCATED


def test_an_error_status_keeps_retry_after_and_shape_and_a_plain_text_error_is_not_shaped():
    shed = _send(lambda r: httpx.Response(503, json=ERROR, headers={"retry-after": "1"}))
    assert (shed.kind, shed.status, shed.retry_after, shed.openai_shaped) == (probe.ERROR_STATUS, 503, "1", True)
    plain = _send(lambda r: httpx.Response(503, text="Request dropped due to backpressure"))
    assert (plain.kind, plain.openai_shaped) == (probe.ERROR_STATUS, False)


def test_a_retried_response_is_marked():
    ok = _send(lambda r: httpx.Response(200, json={}, headers={"x-lorafleet-attempts": "2"}), body={"model": "m", "prompt": "x"})
    assert ok.kind == probe.OK and ok.retried


def test_a_request_past_its_client_timeout_is_a_timeout_not_a_wait():
    async def slow(request):
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    assert _send(slow, timeout_s=0.2).kind == probe.TIMEOUT


@pytest.mark.parametrize("payload, shaped", [(ERROR, True), ({"error": "x"}, False), ({"detail": "x"}, False), (None, False)])
def test_openai_error_shape(payload, shaped):
    assert probe.is_openai_error(payload) is shaped
