"""The ingress's one retry: a request whose replica died before answering (no
ResponseHead yet) is sent once more, steered away from that replica; a failure after
the head is never retried; a second death is a 503. Through the real API app, with a
scripted engine client (no Ray)."""

import asyncio

import pytest
from ray.exceptions import ActorDiedError

from adapters.errors import AdapterInvalid
from deployments.api.completions import ATTEMPTS_HEADER, REPLICA_HEADER
from deployments.engine.protocol import FinalUsage, ResponseHead
from deployments.errors import EngineDead
from deployments.serve.clients import RayEngineClient
from tests.api_harness import ApiHarness, FakeStream

BODY = {"model": "lorafleet-tiny-llama", "prompt": "hi", "max_tokens": 2}


@pytest.fixture
def api(tmp_path, demo_assets):
    return ApiHarness.create(tmp_path, demo_assets / "adapters", demo_assets / "base")


def _answer(replica: str, *items) -> FakeStream:
    return FakeStream(ResponseHead(200, replica, False), list(items) or ['{"choices": []}', FinalUsage(1, 2)])


def _died(replica):
    return EngineDead("engine died", replica=replica)


def test_a_death_before_the_head_is_retried_once_avoiding_the_dead_replica(api):
    api.engine.next_streams = [_died("r1"), _answer("r2")]
    response = api.client.post("/v1/completions", json=BODY)
    assert response.status_code == 200, response.text
    assert api.engine.avoided == [None, "r1"]
    assert response.headers[REPLICA_HEADER] == "r2" and response.headers[ATTEMPTS_HEADER] == "2"


def test_a_dead_ray_actor_counts_as_a_dead_replica_named_by_its_actor_id():
    died = ActorDiedError()
    died.actor_id = "abc123"

    class Handle:
        def options(self, **_):
            return self

        @property
        def generate(self):
            return self

        def remote(self, call, avoid_replica=None):
            return _RaisingStream(died)

    with pytest.raises(EngineDead) as err:
        asyncio.run(RayEngineClient({"base": Handle()}).open(_call()))
    assert err.value.replica == "abc123"


def test_a_second_death_is_a_503_not_a_third_try(api):
    api.engine.next_streams = [_died("r1"), _died("r2"), _answer("r3")]
    response = api.client.post("/v1/completions", json=BODY)
    assert response.status_code == 503 and response.json()["error"]["code"] == "engine_unavailable"
    assert response.headers["Retry-After"]
    assert api.engine.avoided == [None, "r1"]


def test_a_failure_after_the_head_is_not_retried(api):
    api.engine.next_streams = [_answer("r1", _died("r1")), _answer("r2")]
    response = api.client.post("/v1/completions", json=BODY)
    assert response.status_code == 503
    assert api.engine.avoided == [None]


def test_other_errors_are_not_retried(api):
    api.engine.next_streams = [AdapterInvalid("bad weights"), _answer("r2")]
    response = api.client.post("/v1/completions", json=BODY)
    assert response.status_code == 400 and response.json()["error"]["code"] == "adapter_invalid"
    assert api.engine.avoided == [None]


class _RaisingStream:
    def __init__(self, err):
        self.err = err

    async def __anext__(self):
        raise self.err

    def cancel(self):
        pass


def _call():
    from deployments.engine.protocol import Endpoint, EngineCall

    return EngineCall(Endpoint.COMPLETIONS, BODY, None, "0" * 32)
