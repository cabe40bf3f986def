"""Every completion answer says where its time went (a W3C `Server-Timing` header):
`admission` from the request's arrival at the ingress to the admission gate's answer,
`engine` from there to the answer. A refused request carries `admission` alone. The
overload benchmark splits client latency with it (what is left was spent before the
ingress: Ray's HTTP proxy and its queue). Through the real API app, scripted engine."""

import pytest

from bench.harness.probe import parse_server_timing
from factory.demo_assets import BASE_NAME
from tests.api_harness import ApiHarness, FakeEngineClient

BODY = {"model": BASE_NAME, "prompt": "hi", "max_tokens": 2}


@pytest.fixture
def api(tmp_path, demo_assets):
    return ApiHarness.create(tmp_path, demo_assets / "adapters", demo_assets / "base",
                             engine=FakeEngineClient(delay_s=0.3))


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_splits_its_time_between_admission_and_the_engine(api, stream):
    api.client.post("/v1/completions", json=BODY)  # the first request loads the tokenizer
    response = api.client.post("/v1/completions", json={**BODY, "stream": stream})
    assert response.status_code == 200, response.text
    timing = parse_server_timing(response.headers["server-timing"])
    assert set(timing) == {"admission", "engine"}
    assert 0 <= timing["admission"] < 300
    if not stream:  # the whole answer, the engine's 0.3 s pause included
        assert timing["engine"] >= 300
    else:  # up to the stream's head, which comes before the first (paused) token
        assert timing["engine"] >= 0


def test_a_refused_request_says_how_long_it_took_to_refuse(api):
    gate = api.ctx.admissions[BASE_NAME]
    gate.in_flight = gate.limit  # the gate is full
    response = api.client.post("/v1/completions", json=BODY)
    assert response.status_code == 503 and response.json()["error"]["code"] == "overloaded"
    assert response.headers["retry-after"]
    assert set(parse_server_timing(response.headers["server-timing"])) == {"admission"}


def test_the_header_parser_reads_what_the_ingress_writes_and_ignores_the_rest():
    assert parse_server_timing("admission;dur=1.5, engine;dur=30") == {"admission": 1.5, "engine": 30.0}
    assert parse_server_timing("cache;desc=hit, admission;dur=2") == {"admission": 2.0}
    assert parse_server_timing(None) is None and parse_server_timing("x;dur=nan-ish") is None


def test_a_request_refused_before_its_body_is_read_says_so_too(api):
    """The cap on bodies being read at once answers before the gate: its 503 carries the
    same header, so the overload benchmark can place every refusal."""
    api.ctx.readers.in_flight = api.ctx.readers.limit
    response = api.client.post("/v1/completions", json=BODY)
    assert response.status_code == 503 and response.json()["error"]["code"] == "overloaded"
    assert set(parse_server_timing(response.headers["server-timing"])) == {"admission"}
