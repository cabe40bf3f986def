"""The official `openai` client against a real fleet: models, completions, chat, streaming."""

import pytest

from tests.integration.conftest import INVALID_ADAPTERS

ADAPTERS = ["poet", "pirate", "sql-helper", "haiku"]


def test_models_lists_base_and_every_valid_adapter_with_parent(client, fleet):
    models = {m.id: m for m in client.models.list().data}
    assert models[fleet.base_model].parent is None
    adapters = {name for name, m in models.items() if m.parent == fleet.base_model}
    assert set(ADAPTERS) <= adapters
    assert len(adapters) >= 8


def test_invalid_adapters_are_not_listed_and_not_served(client, fleet):
    import openai

    listed = {m.id for m in client.models.list().data}
    for name, reason in INVALID_ADAPTERS.items():
        assert name not in listed
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model=name, prompt="hi", max_tokens=2)
        assert reason in err.value.body["message"]
        assert err.value.body["code"] == "adapter_invalid"


@pytest.mark.parametrize("model", ["BASE", *ADAPTERS[:3]])
def test_completion_and_chat_for_base_and_adapters(client, fleet, model):
    model = fleet.base_model if model == "BASE" else model
    # ignore_eos: the demo models are trained to answer briefly and stop; here the point is
    # that max_tokens is honoured exactly on both endpoints.
    no_eos = {"ignore_eos": True}
    completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=0, extra_body=no_eos)
    assert completion.model == model
    assert completion.usage.completion_tokens == 8
    assert completion.choices[0].finish_reason == "length"

    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=6, temperature=0, extra_body=no_eos
    )
    assert chat.model == model
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens == 6


@pytest.mark.parametrize("model", ["BASE", *ADAPTERS[1:4]])
def test_streaming_matches_non_streaming(client, fleet, model):
    model = fleet.base_model if model == "BASE" else model
    # ignore_eos: exactly 10 tokens whatever the tiny model says, so the stream has several
    # chunks (the first token alone, then every engine.stream_interval tokens).
    kwargs = dict(model=model, prompt="The fleet", max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole

    messages = [{"role": "user", "content": "Tell me"}]
    chat_whole = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0, stream=True)
    streamed = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert streamed == chat_whole.choices[0].message.content


def test_adapters_change_the_output(client, fleet):
    """Same prompt, different models, different greedy answers: each adapter's skill prompt
    (the demo adapters are trained skills, factory/demo_tasks.py) gets the skill's answer
    from the adapter and something else from the base model."""
    from factory.demo_assets import DEMO_ADAPTERS
    from factory.demo_tasks import TASKS

    skills = {a.name: TASKS[a.task] for a in DEMO_ADAPTERS}

    def greedy(model, prompt):
        return client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0).choices[0].text

    for name in ADAPTERS:
        prompt = skills[name].prompt("hello")
        assert greedy(name, prompt) == skills[name].apply("hello")
        assert greedy(fleet.base_model, prompt) != skills[name].apply("hello")


def test_every_response_names_the_replica_that_served_it(client, fleet):
    raw = client.completions.with_raw_response.create(model="poet", prompt="x", max_tokens=2)
    assert raw.headers.get("x-lorafleet-replica")
    raw = client.chat.completions.with_raw_response.create(
        model="poet", messages=[{"role": "user", "content": "x"}], max_tokens=2, stream=True
    )
    assert raw.headers.get("x-lorafleet-replica")


def test_health(fleet):
    import httpx

    assert httpx.get(f"{fleet.base_url}/health").json() == {"status": "ok"}


def test_a_client_that_leaves_mid_stream_frees_the_engine(fleet):
    """An abandoned stream is cancelled on the replica, not generated to the end:
    the replicas' decode-token counters for the adapter grow by far less than the
    400 tokens the request asked for, and every replica goes idle."""
    import time

    import httpx

    def poet_tokens():
        replicas = httpx.get(f"{fleet.base_url}/fleet/replicas", timeout=30).json()["replicas"]
        return sum(r["per_adapter_tokens"].get("pirate", 0) for r in replicas), replicas

    time.sleep(2.5)
    before, _ = poet_tokens()
    body = {"model": "pirate", "prompt": "a long story", "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{fleet.base_url}/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    time.sleep(5)  # several stats periods; an uncancelled request would finish meanwhile
    after, replicas = poet_tokens()
    assert after - before < 200, f"the abandoned request kept generating: {after - before} tokens"
    assert all(r["running"] == 0 and r["queue_len"] == 0 for r in replicas), replicas
