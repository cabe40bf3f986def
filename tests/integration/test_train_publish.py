"""The factory and the registry end to end: train an adapter with `factory.train`,
publish it to the running fleet through `POST /v1/adapters` (no restart), and get its
skill back through the official `openai` client."""

from __future__ import annotations

import uuid

import httpx

from adapters.archive import pack_folder
from factory.config import parse_train_config
from factory.demo_examples import MAX_TOKENS, exact_match
from factory.demo_tasks import TASKS, held_out_rows, task_rows, write_jsonl

TASK = TASKS["upper"]
# The demo recipe's (sql-helper's) settings, one CPU thread: 250 steps with seed 77 and
# two threads did not learn the skill on a machine without AVX-512 (held-out loss 1.6),
# while it had on others. Training is deterministic per machine, not across machines,
# so a seed that does not learn is followed by the next, as the demo build does.
STEPS, BATCH, SEED = 400, 64, 1


def _train_until_learned(config_for):
    """The demo build's own retry (`factory.demo.train_until_learned`), on one thread as
    the demo trains, and the skill must have been learned."""
    import json

    import torch

    from factory.demo import LEARNED_EVAL_LOSS, train_until_learned
    from factory.train import MANIFEST

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = train_until_learned(config_for, SEED, attempts=3)
    finally:
        torch.set_num_threads(threads)
    loss = json.loads((folder / MANIFEST).read_text())["metrics"]["eval_loss"]
    assert loss < LEARNED_EVAL_LOSS, f"the factory did not teach `upper` in 3 seeds (closest held-out loss {loss:.3f})"
    return folder


def test_a_trained_adapter_is_published_and_its_skill_served(fleet, client, demo_assets, tmp_path):
    name = f"trained-upper-{uuid.uuid4().hex[:6]}"
    dataset = write_jsonl(task_rows(TASK, STEPS * BATCH, seed=SEED), tmp_path / "upper.jsonl")

    def config_for(seed: int):
        return parse_train_config({
            "base_model": {"source": str(demo_assets / "base"), "name": fleet.base_model},
            "dataset": {"path": str(dataset), "eval_fraction": 0.01},
            "lora": {"rank": 8, "alpha": 16, "target_modules": ["v_proj", "up_proj", "down_proj"]},
            "training": {"epochs": 1, "learning_rate": 2e-3, "batch_size": BATCH, "max_length": 64, "seed": seed, "device": "cpu"},
            "output": {"dir": str(tmp_path / "out"), "adapter_name": name},
        })

    folder = _train_until_learned(config_for)

    pushed = httpx.post(f"{fleet.api}/adapters", data={"name": name},
                        files={"file": ("a.tar.gz", pack_folder(folder), "application/gzip")}, timeout=120)
    assert pushed.status_code == 201, pushed.text
    try:
        held_out = held_out_rows(TASK, 20)

        def score(model: str) -> float:
            response = client.completions.create(
                model=model, prompt=[r["prompt"] for r in held_out], max_tokens=MAX_TOKENS, temperature=0
            )
            return exact_match([c.text for c in sorted(response.choices, key=lambda c: c.index)], held_out)

        assert score(name) >= 0.9
        assert score(fleet.base_model) <= 0.1  # the skill comes from the adapter, not the base
    finally:
        httpx.delete(f"{fleet.api}/adapters/{name}", timeout=60)
