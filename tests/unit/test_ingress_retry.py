"""The ingress's one retry: a request whose replica died before answering (no
ResponseHead yet) is sent once more, steered away from that replica; a failure after
the head is never retried; a second death is a 503. Fake engine handle, real
ingress methods (no Ray cluster)."""

import asyncio
from types import SimpleNamespace

import pytest
from ray.exceptions import ActorDiedError

from deployments.errors import EngineDead
from deployments.tenancy.admission import AdmissionGate
from deployments.serve.ingress import ATTEMPTS_HEADER, REPLICA_HEADER, Ingress
from deployments.engine.protocol import Endpoint, ResponseHead

IngressClass = Ingress.func_or_class


class FakeStream:
    def __init__(self, items):
        self._items = list(items)
        self.cancelled = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self._items:
            raise StopAsyncIteration
        item = self._items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self):
        self.cancelled = True


class FakeEngine:
    """`engine.options(...).generate.remote(...)` hands out the scripted streams in order."""

    def __init__(self, *streams):
        self.streams = list(streams)
        self.calls = []

    def options(self, **_):
        return SimpleNamespace(generate=SimpleNamespace(remote=self._remote))

    def _remote(self, endpoint, body, adapter, avoid_replica=None):
        self.calls.append(avoid_replica)
        return self.streams.pop(0)


def _ingress(engine):
    fake = SimpleNamespace(engine=engine, admission=AdmissionGate(4))
    fake._open = lambda *a, **k: IngressClass._open(fake, *a, **k)
    return fake


def _call(fake):
    ticket = fake.admission.try_enter()
    observed = SimpleNamespace(first_chunk=lambda: None, finish=lambda status=None: None, ttft_s=None, status=None)
    accounting = SimpleNamespace(finish=lambda usage, ended=True: None)
    return asyncio.run(IngressClass._call_engine(fake, Endpoint.COMPLETIONS, {"model": "m"}, None, observed, ticket, accounting))


def _died(replica):
    return EngineDead("engine died", replica=replica)


def test_a_death_before_the_head_is_retried_once_avoiding_the_dead_replica():
    engine = FakeEngine(FakeStream([_died("r1")]), FakeStream([ResponseHead(200, "r2", False), '{"ok": true}']))
    response = _call(_ingress(engine))
    assert response.status_code == 200
    assert engine.calls == [None, "r1"]
    assert response.headers[REPLICA_HEADER] == "r2" and response.headers[ATTEMPTS_HEADER] == "2"


def test_a_dead_ray_actor_counts_as_a_dead_replica_and_is_retried_by_actor_id():
    died = ActorDiedError()
    died.actor_id = "abc123"
    engine = FakeEngine(FakeStream([died]), FakeStream([ResponseHead(200, "r2", False), "{}"]))
    assert _call(_ingress(engine)).status_code == 200
    assert engine.calls == [None, "abc123"]


def test_a_second_death_is_a_503_not_a_third_try():
    engine = FakeEngine(FakeStream([_died("r1")]), FakeStream([_died("r2")]), FakeStream([ResponseHead(200, "r3", False), "{}"]))
    with pytest.raises(EngineDead):  # _respond maps it to 503 engine_unavailable + Retry-After
        _call(_ingress(engine))
    assert engine.calls == [None, "r1"]


def test_a_failure_after_the_head_is_not_retried():
    engine = FakeEngine(FakeStream([ResponseHead(200, "r1", False), _died("r1")]), FakeStream([ResponseHead(200, "r2", False), "{}"]))
    with pytest.raises(EngineDead):
        _call(_ingress(engine))
    assert engine.calls == [None]


def test_other_errors_are_not_retried():
    from adapters.errors import AdapterLoadError

    engine = FakeEngine(FakeStream([AdapterLoadError("bad weights", retriable=False)]), FakeStream([ResponseHead(200, "r2", False), "{}"]))
    with pytest.raises(AdapterLoadError):
        _call(_ingress(engine))
    assert engine.calls == [None]
