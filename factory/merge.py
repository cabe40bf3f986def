"""Combine adapters into one with peft's `add_weighted_adapter`.

`linear`, `ties` and `dare_linear` merge the LoRA A and B matrices separately, so
peft requires every input to have the same rank and the result keeps that rank (its
target modules are the union of the inputs'). Inputs are validated as the fleet
validates uploads before any of them is loaded, and the result is validated against
the fleet's rank limit before it is moved into place.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from adapters.errors import AdapterInvalid
from adapters.validation import ADAPTER_CONFIG, base_model_info, check_adapter_name, validate_adapter
from adapters.manifest import sha256_file
from factory.errors import FactoryError
from factory.fingerprint import base_model_folder

METHODS = ("linear", "ties", "dare_linear")
MERGE_MANIFEST = "merge_manifest.json"


def _read_base_name(folder: Path) -> str:
    try:
        return json.loads((folder / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FactoryError(f"{folder}: cannot read base_model_name_or_path from {ADAPTER_CONFIG} ({err})") from None


def check_merge(specs, method: str, weights: list[float], max_lora_rank: int) -> int:
    """Pure pre-flight checks; returns the merged adapter's rank."""
    if method not in METHODS:
        raise FactoryError(f"unknown merge method {method!r}; use one of {', '.join(METHODS)}")
    if len(specs) < 2:
        raise FactoryError("merging needs at least two adapters")
    if len(weights) != len(specs):
        raise FactoryError(f"got {len(weights)} weight(s) for {len(specs)} adapters; give one weight per adapter")
    ranks = {s.name: s.rank for s in specs}
    if len(set(ranks.values())) != 1:
        listed = ", ".join(f"{n}: r={r}" for n, r in ranks.items())
        raise FactoryError(f"method {method!r} needs adapters of equal rank ({listed}); merge adapters of one rank")
    rank = next(iter(ranks.values()))
    if rank > max_lora_rank:
        raise FactoryError(f"merged rank {rank} exceeds max_lora_rank {max_lora_rank}")
    return rank


def merge_adapters(
    inputs: list[Path], *, base: str, out_dir: Path, name: str, method: str = "linear",
    weights: list[float] | None = None, density: float = 0.5, max_lora_rank: int = 16, seed: int = 0,
) -> Path:
    """Merge `inputs` (adapter folders on the same base) into `out_dir/name`; return it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    check_adapter_name(name)
    inputs = [Path(p) for p in inputs]
    weights = list(weights) if weights is not None else [1.0] * len(inputs)
    for folder in inputs:
        if not folder.is_dir():
            raise FactoryError(f"adapter folder not found: {folder}")
    names = [f.name for f in inputs]
    if len(set(names)) != len(names):
        raise FactoryError(f"the same adapter is listed twice: {names}")
    base_names = {_read_base_name(f) for f in inputs}
    if len(base_names) != 1:
        raise FactoryError(f"adapters were trained on different base models: {sorted(base_names)}")
    base_name = base_names.pop()
    base_folder = base_model_folder(base)
    info = base_model_info(str(base_folder), base_name)
    try:
        specs = [validate_adapter(f, base=info, max_lora_rank=256) for f in inputs]
    except AdapterInvalid as err:
        raise FactoryError(f"input adapter refused: {err.message}") from None
    rank = check_merge(specs, method, weights, max_lora_rank)
    if method != "linear" and not 0.0 < density <= 1.0:
        raise FactoryError(f"density must be in (0, 1], got {density}")

    torch.manual_seed(seed)  # dare_linear drops weights at random
    model = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(inputs[0]), adapter_name=specs[0].name)
    for folder, spec in zip(inputs[1:], specs[1:]):
        model.load_adapter(str(folder), adapter_name=spec.name)
    merged_key = "__merged__"
    model.add_weighted_adapter(
        [s.name for s in specs], weights, merged_key, combination_type=method,
        **({"density": density} if method != "linear" else {}),
    )
    model.set_adapter(merged_key)
    for spec in specs:
        model.delete_adapter(spec.name)
    # peft looks the base up by this name when saving; point it at the local folder
    # (write_adapter_config records the fleet's name afterwards).
    model.peft_config[merged_key].base_model_name_or_path = str(base_folder)

    final = Path(out_dir) / name
    staging = final.parent / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        tmp = staging / name
        (staging / merged_key).rename(tmp)  # peft saves a non-default adapter in a subfolder
        from factory.train import write_adapter_config

        write_adapter_config(tmp, base_name)
        manifest = {
            "adapter_name": name, "method": method, "weights": weights,
            "density": density if method != "linear" else None, "seed": seed, "rank": rank,
            "inputs": [{"name": s.name, "rank": s.rank, "target_modules": list(s.target_modules),
                        "weights_sha256": sha256_file(f / "adapter_model.safetensors")} for s, f in zip(specs, inputs)],
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / MERGE_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        try:
            validate_adapter(tmp, base=info, max_lora_rank=max_lora_rank)
        except AdapterInvalid as err:
            raise FactoryError(f"the merged adapter would be refused by the fleet: {err.message}") from None
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
