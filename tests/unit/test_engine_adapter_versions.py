"""How a replica registers adapter versions with vLLM (fake engine; the real one is
exercised in tests/integration/test_adapter_registry.py): each version is its own
LoRA, new weights under one id never reuse the old registration, and files that fail
verification never reach the engine."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from adapters.errors import AdapterLoadError
from adapters.validation import AdapterSpec
from deployments.config import LorafleetConfig
from deployments.engine.vllm_engine import VLLMEngine


class FakeEngine:
    errored = False

    def __init__(self):
        self.added = []
        self.removed = []
        self.refuse = set()  # lora names whose weights "vLLM" rejects

    async def add_lora(self, request):
        if request.lora_name in self.refuse:
            raise ValueError("lora_A shape mismatch")
        self.added.append((request.lora_name, request.lora_int_id, request.lora_path))

    async def remove_lora(self, lora_id):
        self.removed.append(lora_id)


def _spec(name, version, fingerprint, files=(("adapter_model.safetensors", "0" * 64, 1),)):
    return AdapterSpec(name=name, path=f"/store/{name}", rank=8, alpha=8.0, target_modules=("q_proj",),
                       base_model="b", fingerprint=fingerprint, version=version, files=files)


@pytest.fixture
def engine():
    config = LorafleetConfig.model_validate({"model": {"source": "/m", "served_name": "base"}, "adapters": {"uri": "/a"}})
    def materialize(spec):
        if spec.fingerprint == "bad":
            raise AdapterLoadError(f"adapter `{spec.served_id}` is corrupted in the store", retriable=False)
        return f"/cache/{spec.fingerprint}" if spec.files else spec.path  # as AdapterStore.materialize

    e = VLLMEngine(config, "r1", store=SimpleNamespace(pin=lambda spec: SimpleNamespace(path=materialize(spec), release=lambda: None)))
    e.engine = FakeEngine()
    e._models = SimpleNamespace(lora_requests={})
    return e


async def test_each_version_is_its_own_lora_loaded_from_the_verified_cache(engine):
    await engine.ensure_adapter(_spec("x", "1", "f1"))
    await engine.ensure_adapter(_spec("x", "2", "f2"))
    await engine.ensure_adapter(_spec("x", "1", "f1"))  # still resident: nothing to do
    names = [(name, path) for name, _, path in engine.engine.added]
    assert names == [("x@1", "/cache/f1"), ("x@2", "/cache/f2")]
    assert len({lora_id for _, lora_id, _ in engine.engine.added}) == 2
    assert set(engine._models.lora_requests) == {"x@1", "x@2"}
    assert engine.engine.removed == []


async def test_new_weights_under_the_same_id_get_a_new_lora_and_drop_the_old(engine):
    await engine.ensure_adapter(_spec("x", "3", "old"))
    await engine.ensure_adapter(_spec("x", "3", "new"))  # version 3 deleted and published again
    (_, old_id, _), (_, new_id, path) = engine.engine.added
    assert new_id != old_id and path == "/cache/new"
    assert engine.engine.removed == [old_id]


async def test_a_legacy_flat_adapter_keeps_its_bare_name(engine):
    legacy = AdapterSpec(name="poet", path="/store/poet", rank=8, alpha=8.0, target_modules=("q_proj",),
                         base_model="b", fingerprint="p", version="1")
    await engine.ensure_adapter(legacy)
    assert engine.engine.added == [("poet", 1, "/store/poet")]


async def test_a_version_that_fails_verification_never_reaches_the_engine(engine):
    with pytest.raises(AdapterLoadError, match="corrupted"):
        await engine.ensure_adapter(_spec("x", "1", "bad"))
    assert engine.engine.added == []
    assert engine._loading == set()
    assert "x@1" not in engine._models.lora_requests


async def test_weights_the_engine_refuses_make_the_adapter_unservable_fleet_wide(engine):
    """A 400 adapter_invalid (not a 500), and never handed to vLLM again; the
    fingerprint goes to the controller, which spreads it to every replica."""
    from adapters.errors import AdapterInvalid

    engine.engine.refuse.add("x@1")
    with pytest.raises(AdapterInvalid):
        await engine.ensure_adapter(_spec("x", "1", "poison"))
    assert engine.take_unservable() == ["poison"] and engine.take_unservable() == []
    engine.engine.refuse.clear()
    with pytest.raises(AdapterInvalid):  # refused at once: the engine is not asked again
        await engine.ensure_adapter(_spec("x", "1", "poison"))
    assert engine.engine.added == []
    other = VLLMEngine(engine.config, "r2")
    other.engine = FakeEngine()
    other._models = SimpleNamespace(lora_requests={})
    other.mark_unservable(["poison"])  # what the controller's answer carries
    with pytest.raises(AdapterInvalid):
        await other.ensure_adapter(_spec("x", "1", "poison"))
    assert other.engine.added == []


async def test_registrations_do_not_outlive_the_engines_host_cache(engine):
    """Per-version tables are bounded by what vLLM holds: an adapter its LRU dropped is
    forgotten and registered afresh on its next use."""
    for version in range(1, 8):  # max_cpu_loras is 4 by default
        await engine.ensure_adapter(_spec("x", str(version), f"f{version}"))
    assert len(engine._registered) <= engine.config.engine.max_cpu_loras + 1
    assert set(engine._models.lora_requests) == set(engine._registered)
    assert not engine._lora_locks


class BlockingServing:
    """vLLM's OpenAI layer for one completion that runs until `finish` is set."""

    def __init__(self):
        self.entered = asyncio.Event()
        self.finish = asyncio.Event()

    async def create_completion(self, request, raw_request=None):
        self.entered.set()
        await self.finish.wait()
        return SimpleNamespace(model_dump_json=lambda: "{}")


def _completion(spec):
    from deployments.engine.protocol import EngineCall, Endpoint

    return EngineCall(Endpoint.COMPLETIONS, {"prompt": "hi", "max_tokens": 4}, spec, "0" * 32)


async def _in_flight(engine, spec):
    """Start a completion for `spec`; return (serving, task) once vLLM is running it."""
    from deployments.engine.protocol import Endpoint

    serving = BlockingServing()
    engine._serving = {Endpoint.COMPLETIONS: serving}

    async def run():
        return [item async for item in engine.generate(_completion(spec))]

    task = asyncio.create_task(run())
    await asyncio.wait_for(serving.entered.wait(), 60)
    return serving, task


def _ids(engine, name):
    return [lora_id for added, lora_id, _ in engine.engine.added if added == name]


async def test_an_adapter_keeps_its_lora_id_while_a_request_for_it_runs(engine):
    """The overload bench's engine death (KeyError in vLLM's convert_mapping): while a
    request for x ran, loads of other adapters pushed x out of the host-cache mirror, its
    registration was forgotten, and the next request for x registered it under a second
    lora_int_id with the same lora_name. vLLM's worker keys a step's LoRAs by name, so one
    of the two ids was never put in a slot. One name must map to one id while in use."""
    serving, task = await _in_flight(engine, _spec("x", "1", "f1"))
    for version in range(1, 6):  # max_cpu_loras is 4: x leaves the host cache
        await engine.ensure_adapter(_spec("y", str(version), f"g{version}"))
    assert "x@1" not in engine.residency.cpu
    await engine.ensure_adapter(_spec("x", "1", "f1"))  # a second request for x meanwhile
    assert len(set(_ids(engine, "x@1"))) == 1
    serving.finish.set()
    await asyncio.wait_for(task, 10)
    assert engine._in_flight == {}
    for version in range(6, 11):  # once nothing runs for it, the registration may go
        await engine.ensure_adapter(_spec("y", str(version), f"g{version}"))
    assert "x@1" not in engine._registered
    assert len(engine._registered) <= engine.config.engine.max_cpu_loras + 1


async def test_new_weights_wait_for_the_requests_on_the_old_ones(engine):
    """Version 3 deleted and published again while a request for it runs: its LoRA is not
    removed, nor the name handed to a new id, until that request is done."""
    serving, task = await _in_flight(engine, _spec("x", "3", "old"))
    (old_id,) = _ids(engine, "x@3")
    load = asyncio.create_task(engine.ensure_adapter(_spec("x", "3", "new")))
    await asyncio.sleep(0.3)
    assert not load.done()
    assert engine.engine.removed == [] and engine._models.lora_requests["x@3"].lora_int_id == old_id
    serving.finish.set()
    await asyncio.wait_for(task, 10)
    await asyncio.wait_for(load, 10)
    assert engine.engine.removed == [old_id]
    assert engine._models.lora_requests["x@3"].lora_int_id != old_id


async def test_a_stopped_request_releases_its_adapter(engine):
    serving, task = await _in_flight(engine, _spec("x", "1", "f1"))
    assert engine._in_flight == {"x@1": 1}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine._in_flight == {}


def test_vllm_keys_a_steps_loras_by_name_not_id():
    """Why one name must never have two ids in flight: vLLM 0.32's worker collects a
    step's LoRAs into a set of LoRARequests, which hash and compare by lora_name, while
    the step's token mapping (and the scheduler's max_loras count) uses lora_int_id. Two
    ids under one name leave one id out of the LoRA slots: KeyError in convert_mapping."""
    import numpy as np
    from vllm.lora.request import LoRARequest
    from vllm.v1.worker.gpu_input_batch import InputBatch

    old, new = LoRARequest("x@1", 4, "/cache/f1"), LoRARequest("x@1", 10, "/cache/f1")
    batch = SimpleNamespace(num_reqs=2, request_lora_mapping=np.array([4, 10]),
                            lora_id_to_lora_request={4: old, 10: new})
    _, token_mapping, requests = InputBatch.make_lora_inputs(batch, np.array([1, 1]), np.array([1, 1]))
    assert set(token_mapping) == {4, 10}
    assert {r.lora_int_id for r in requests} == {4}  # id 10 is never activated
