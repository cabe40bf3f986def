"""Train the demo: pretrain the tiny base to copy, then one skill adapter per task.

Called by `factory.demo_assets.build_demo_assets`. Every step is seeded and runs on one
CPU thread (intra-op threading changes float summation order), so a rebuild gives
byte-identical weights; adapters train in parallel worker processes, one thread
each, which changes only the wall time, never the bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from factory.config import TrainConfig, TrainingSpec, parse_train_config
from factory.demo_tasks import COPY, COPY_ALPHABET, TASKS, task_rows, write_jsonl

# Bump when a change to the code below (or to the tasks) changes what gets built:
# the asset cache is keyed by the recipe, and this is the part of it that is code.
RECIPE_VERSION = "2"

# An adapter "learned its skill" below this held-out loss (those that do reach 0.001-0.06;
# one that did not stays near 3). The weights are byte-identical only on one kind of CPU:
# another instruction set rounds differently, and a skill that clicks late in training
# (caesar, poet's skill until then: learned on one machine, not at all on another)
# may not click at all. So an adapter that misses is retrained with the next training seed
# (the dataset stays the same), deterministically on any one machine.
LEARNED_EVAL_LOSS = 0.2
RETRY_SEED_STRIDE = 1000


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that decides the demo weights, besides the adapters' own specs."""

    pretrain_steps: int = 600
    pretrain_batch: int = 64
    pretrain_lr: float = 3e-3
    pretrain_seed: int = 1
    adapter_steps: int = 400
    adapter_batch: int = 64
    adapter_lr: float = 2e-3
    adapter_attempts: int = 3  # training seeds tried until the adapter learns its skill (LEARNED_EVAL_LOSS)
    workers: int = 2  # parallel adapter trainings; does not change the result


DEFAULT_RECIPE = DemoRecipe()


def recipe_digest(base_config: dict, adapters: tuple, recipe: DemoRecipe) -> str:
    import hashlib

    payload = {
        "version": RECIPE_VERSION,
        "base": base_config,
        "recipe": {k: v for k, v in asdict(recipe).items() if k != "workers"},
        "adapters": [asdict(a) for a in adapters],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _single_thread():
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def pretrain_base(base_dir: Path, recipe: DemoRecipe, *, progress: bool = True) -> dict:
    """Teach the random base to copy (`copy: <text>\\n` -> `<text>`), in place.
    Returns the final training loss."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from factory.dataset import Example, tokenize_example
    from factory.train import fit

    _single_thread()
    torch.manual_seed(recipe.pretrain_seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    rows = task_rows(COPY, recipe.pretrain_steps * recipe.pretrain_batch, recipe.pretrain_seed, alphabet=COPY_ALPHABET)
    tokenized = [tokenize_example(Example(line=i + 1, **r), tokenizer, 64, "copy") for i, r in enumerate(rows)]
    model = LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    spec = TrainingSpec(epochs=1, learning_rate=recipe.pretrain_lr, warmup_ratio=0.15, batch_size=recipe.pretrain_batch,
                        seed=recipe.pretrain_seed, device="cpu")
    result = fit(model, tokenized, [], spec, tokenizer.pad_token_id, "cpu", progress, "pretrain base (copy)")
    model.save_pretrained(str(base_dir), safe_serialization=True)
    return {"train_loss": result.train_loss, "steps": result.steps}


def train_until_learned(config_for: Callable[[int], TrainConfig], first_seed: int, attempts: int) -> Path:
    """Train the adapter `config_for(seed)` describes with the factory, first with
    `first_seed`, then with the next training seed (+RETRY_SEED_STRIDE) while its held-out
    loss stays at or above LEARNED_EVAL_LOSS, at most `attempts` times. Returns its folder:
    the first attempt that learned, or else the closest (its manifest's loss says so)."""
    from factory.train import MANIFEST, train

    best: tuple[float, Path] | None = None
    final: Path | None = None
    for attempt in range(max(1, attempts)):
        folder = train(config_for(first_seed + RETRY_SEED_STRIDE * attempt), progress=False)
        final = folder
        loss = json.loads((folder / MANIFEST).read_text())["metrics"]["eval_loss"]
        if loss < LEARNED_EVAL_LOSS:
            break
        kept = folder.with_name(f".{folder.name}.attempt-{attempt}")  # hidden: never read as an adapter
        shutil.rmtree(kept, ignore_errors=True)
        folder.rename(kept)
        if best is None or loss < best[0]:
            best = (loss, kept)
    else:
        best[1].rename(final)  # nothing learned: keep the closest
    for leftover in final.parent.glob(f".{final.name}.attempt-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def _train_one(base_dir: str, base_name: str, adapter: dict, recipe: dict, out_dir: str, data_dir: str) -> tuple[str, float, dict]:
    """Worker: write the adapter's dataset, train it with the factory until it learns its
    skill (`train_until_learned`, the dataset stays the same), return its metrics."""
    from factory.train import MANIFEST

    _single_thread()
    started = time.monotonic()
    task = TASKS[adapter["task"]]
    rows = task_rows(task, recipe["adapter_steps"] * recipe["adapter_batch"], seed=adapter["seed"])
    dataset = write_jsonl(rows, Path(data_dir) / f"{adapter['name']}.jsonl")

    def config_for(seed: int) -> TrainConfig:
        return parse_train_config({
            "base_model": {"source": base_dir, "name": base_name},
            "dataset": {"path": str(dataset), "eval_fraction": 0.01},
            "lora": {"rank": adapter["rank"], "alpha": 2 * adapter["rank"], "target_modules": list(adapter["target_modules"])},
            "training": {"epochs": 1, "learning_rate": recipe["adapter_lr"], "batch_size": recipe["adapter_batch"],
                         "max_length": 64, "seed": seed, "device": "cpu"},
            "output": {"dir": out_dir, "adapter_name": adapter["name"]},
        })

    folder = train_until_learned(config_for, adapter["seed"], recipe["adapter_attempts"])
    metrics = json.loads((folder / MANIFEST).read_text())["metrics"]
    return adapter["name"], time.monotonic() - started, metrics


def train_demo_adapters(base_dir: Path, base_name: str, adapters: tuple, out_dir: Path, data_dir: Path,
                        recipe: DemoRecipe, *, log=print, on_trained=None) -> None:
    """Train every skill adapter (those with a task), `recipe.workers` at a time, into
    `out_dir/<name>`. `on_trained(name, seconds, metrics)` is called as each one finishes
    (`lorafleet serve --demo` publishes it to the running fleet then)."""
    jobs = [asdict(a) for a in adapters]
    workers = max(1, min(recipe.workers, len(jobs), os.cpu_count() or 1))
    args = (str(base_dir), base_name)

    def finished(name: str, seconds: float, metrics: dict) -> None:
        log(f"  trained {name} in {seconds:.0f} s (eval loss {metrics['eval_loss']:.4f})")
        if on_trained is not None:
            on_trained(name, seconds, metrics)

    if workers == 1:
        for job in jobs:
            finished(*_train_one(*args, job, asdict(recipe), str(out_dir), str(data_dir)))
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_train_one, *args, job, asdict(recipe), str(out_dir), str(data_dir)) for job in jobs]
        for future in as_completed(futures):
            finished(*future.result())
