"""Train one LoRA adapter from a JSONL dataset: `train(config) -> adapter folder`.

A plain PyTorch loop rather than HF Trainer: on CPU it is faster for small models,
and every source of randomness (split, shuffles, LoRA init, dropout) is seeded from
`training.seed`, so the same config, data and machine give a byte-identical adapter.
The output is written to a temporary folder, checked with the fleet's own
`validate_adapter`, and only then renamed into place: a failed run never leaves a
half-written adapter where a store would pick it up.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from factory.config import TrainConfig, TrainingSpec
from adapters.manifest import sha256_file
from factory.dataset import IGNORE_INDEX, TokenizedExample, load_examples, split, tokenize_example
from factory.errors import FactoryError
from factory.fingerprint import base_model_fingerprint, base_model_folder

MANIFEST = "training_manifest.json"


@dataclass(frozen=True)
class TrainResult:
    train_loss: float
    eval_loss: float | None
    steps: int


def resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise FactoryError("training.device is 'cuda' but no CUDA device is available")
    return choice


def _batch(rows: list[TokenizedExample], pad_id: int, device: str):
    import torch

    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        mask[i, :n] = 1
    return ids.to(device), mask.to(device), labels.to(device)


def _token_loss_sum(model, rows, pad_id, device):
    """(sum of completion-token losses, number of completion tokens) for one batch."""
    import torch

    ids, mask, labels = _batch(rows, pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    targets = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, int((targets != IGNORE_INDEX).sum())


def _evaluate(model, rows, batch_size, pad_id, device) -> float | None:
    import torch

    if not rows:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            loss, n = _token_loss_sum(model, rows[start:start + batch_size], pad_id, device)
            total, count = total + loss.item(), count + n
    model.train()
    return total / count


def fit(model, train_rows, eval_rows, t: TrainingSpec, pad_id: int, device: str, progress: bool, desc: str) -> TrainResult:
    """Train every parameter of `model` that requires grad (the LoRA weights for an
    adapter; all weights when the demo pretrains its base); return the losses."""
    import torch
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / t.batch_size)
    total_steps = steps_per_epoch * t.epochs
    warmup = int(total_steps * t.warmup_ratio)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    shuffler = random.Random(t.seed)
    model.train()
    epoch_loss = 0.0
    with tqdm(total=total_steps, desc=desc, disable=not progress, unit="step") as bar:
        for epoch in range(t.epochs):
            order = list(range(len(train_rows)))
            shuffler.shuffle(order)
            loss_sum, token_count = 0.0, 0
            for start in range(0, len(order), t.batch_size):
                rows = [train_rows[i] for i in order[start:start + t.batch_size]]
                loss, n = _token_loss_sum(model, rows, pad_id, device)
                optimizer.zero_grad(set_to_none=True)
                (loss / n).backward()
                torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                loss_sum, token_count = loss_sum + loss.item(), token_count + n
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item() / n:.4f}", refresh=False)
            epoch_loss = loss_sum / token_count
    return TrainResult(train_loss=epoch_loss, eval_loss=_evaluate(model, eval_rows, t.batch_size, pad_id, device),
                       steps=total_steps)


def _library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def write_adapter(model, out: Path, base_name: str) -> None:
    """Save the peft adapter as the fleet expects it: safetensors, the fleet's base
    name, target modules in a stable order (peft writes a set), no model card."""
    model.save_pretrained(str(out), safe_serialization=True)
    write_adapter_config(out, base_name)


def write_adapter_config(out: Path, base_name: str) -> None:
    config_path = out / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = base_name
    if isinstance(adapter_config.get("target_modules"), list):
        adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    (out / "README.md").unlink(missing_ok=True)


def validate_output(folder: Path, base_source: str, base_name: str, rank: int):
    """The fleet's own check; raises AdapterInvalid if the fleet would refuse it."""
    from adapters.validation import base_model_info, validate_adapter

    return validate_adapter(folder, base=base_model_info(base_source, base_name), max_lora_rank=rank)


def train(config: TrainConfig, *, progress: bool = True) -> Path:
    """Train the adapter `config` describes; return its folder (`output.dir/adapter_name`)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    t = config.training
    device = resolve_device(t.device)
    dataset_path = Path(config.dataset.path)
    examples = load_examples(dataset_path)
    base_folder = base_model_folder(config.base_model.source)
    tokenizer = AutoTokenizer.from_pretrained(str(base_folder))
    rows = [tokenize_example(e, tokenizer, t.max_length, source=dataset_path.name) for e in examples]
    train_rows, eval_rows = split(rows, config.dataset.eval_fraction, t.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=device != "cpu")
    try:
        torch.manual_seed(t.seed)
        base = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32).to(device)
        lora = LoraConfig(
            r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
            target_modules=list(config.lora.target_modules), bias="none", task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, lora)
        result = fit(model, train_rows, eval_rows, t, pad_id, device, progress, config.output.adapter_name)
    finally:
        torch.use_deterministic_algorithms(deterministic)

    final = config.adapter_dir
    # Staged under a hidden sibling folder, but with the adapter's own name, so the
    # validation below checks exactly the folder that gets renamed into place.
    staging = final.parent / f".{final.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    tmp = staging / final.name
    tmp.mkdir(parents=True)
    try:
        write_adapter(model, tmp, config.base_model.recorded_name)
        manifest = {
            "adapter_name": config.output.adapter_name,
            "base_model": {
                "source": config.base_model.source,
                "name": config.base_model.recorded_name,
                "fingerprint_sha256": base_model_fingerprint(base_folder),
            },
            "dataset": {
                "path": str(dataset_path),
                "sha256": sha256_file(dataset_path),
                "rows": len(rows),
                "train_rows": len(train_rows),
                "eval_rows": len(eval_rows),
            },
            "hyperparameters": {"lora": config.lora.model_dump(mode="json"), "training": config.training.model_dump(mode="json")},
            "device": device,
            "metrics": {"train_loss": result.train_loss, "eval_loss": result.eval_loss, "steps": result.steps},
            "library_versions": _library_versions(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "train_seconds": round(time.monotonic() - started, 1),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        validate_output(tmp, str(base_folder), config.base_model.recorded_name, config.lora.rank)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
