"""The right adapter served every request.

For each adapter, the prompt logprobs the fleet returns (completions with echo +
logprobs) must match an independent peft + transformers computation of the same
adapter within 1e-3, and must differ between adapters. Then the same under 64
concurrent requests spread over 5 adapters and the base: mixed-adapter batches on
several replicas must still give every request its own adapter.

This is also the regression test for vLLM 0.32's crash on batched prompt logprobs
with LoRA on lm_head (README, "Known vLLM bug"): without the engine's
`--lora-target-modules` restriction, the concurrent part kills the engines.
"""

import asyncio
import functools

import pytest

ADAPTERS = ["poet", "pirate", "sql-helper", "translator", "math-tutor"]
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "lorafleet serves many adapters on one base model",
    "SELECT name FROM users WHERE id = 42;",
    "Arr, matey! Where be the treasure?",
]
TOLERANCE = 1e-3


@functools.lru_cache(maxsize=None)
def _reference_model(base_dir: str, adapter_dir: str | None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval()


def reference_logprobs(fleet_assets, model_name, base_model, token_ids):
    """log p(token_i | tokens_<i) for i >= 1, from peft + transformers."""
    import torch

    base_dir = str(fleet_assets.parent / "demo" / "base")
    adapter_dir = None if model_name == base_model else str(fleet_assets / "adapters" / model_name)
    model = _reference_model(base_dir, adapter_dir)
    with torch.no_grad():
        logits = model(torch.tensor([token_ids])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return [logprobs[i - 1, token_ids[i]].item() for i in range(1, len(token_ids))]


def _served_prompt_logprobs(completion):
    """(prompt token ids, their logprobs from the server), generated token excluded."""
    logprobs = completion.choices[0].logprobs
    ids = [int(t.removeprefix("token_id:")) for t in logprobs.tokens]
    lps = logprobs.token_logprobs
    n_prompt = completion.usage.prompt_tokens
    return ids[:n_prompt], lps[:n_prompt]


def _request(model, prompt):
    return dict(
        model=model, prompt=prompt, max_tokens=1, temperature=0, echo=True, logprobs=1,
        extra_body={"return_tokens_as_token_ids": True},
    )


def _assert_matches_reference(fleet, model, completion):
    ids, served = _served_prompt_logprobs(completion)
    assert served[0] is None  # BOS has no logprob
    expected = reference_logprobs(fleet.assets, model, fleet.base_model, ids)
    worst = max(abs(a - b) for a, b in zip(served[1:], expected))
    assert worst < TOLERANCE, f"{model}: served prompt logprobs differ from peft reference by {worst}"
    return served[1:]


@pytest.mark.parametrize("model", ["BASE", *ADAPTERS])
def test_prompt_logprobs_match_peft_reference(client, fleet, model):
    model = fleet.base_model if model == "BASE" else model
    for prompt in PROMPTS[:2]:
        _assert_matches_reference(fleet, model, client.completions.create(**_request(model, prompt)))


def test_adapters_give_different_logprobs(client, fleet):
    seen = {}
    for model in [fleet.base_model, *ADAPTERS]:
        ids, lps = _served_prompt_logprobs(client.completions.create(**_request(model, PROMPTS[0])))
        seen[model] = lps[1:]
    models = list(seen)
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            diff = max(abs(x - y) for x, y in zip(seen[a], seen[b]))
            assert diff > 0.05, f"{a} and {b} give the same logprobs: adapters not applied"


def test_64_concurrent_mixed_adapter_requests_each_get_their_own_adapter(async_client, client, fleet):
    models = [fleet.base_model, *ADAPTERS]
    jobs = [(models[i % len(models)], PROMPTS[i % len(PROMPTS)]) for i in range(64)]

    async def run_all():
        calls = [async_client.completions.with_raw_response.create(**_request(m, p)) for m, p in jobs]
        return await asyncio.gather(*calls)

    responses = asyncio.run(run_all())
    replicas = set()
    for (model, _), raw in zip(jobs, responses):
        completion = raw.parse()
        replicas.add(raw.headers["x-lorafleet-replica"])
        assert completion.model == model
        _assert_matches_reference(fleet, model, completion)
    assert len(replicas) >= 2, "the concurrent batch should have been spread over several replicas"
    # The fleet is still healthy afterwards (the vLLM bug would have killed the engines).
    after = client.completions.with_raw_response.create(model="poet", prompt="still alive?", max_tokens=4)
    assert after.status_code == 200
