"""Poison adapters: peft folders whose rank and names look right but whose weights do not
fit the base model, built from a demo adapter.

The first one is issue 12's: `lora_A` of one module 7 columns too wide, at the right
rank. A rank-only check accepts it; vLLM 0.32 then dies inside a generate step
(EngineDeadError). Reused by the unit tests of validation and the store, and by
live-fleet tests (upload -> 400 before any engine sees it).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PREFIX = "base_model.model.model.layers"


def _rewrite(src: Path, dst: Path, edit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Path:
    shutil.copytree(src, dst)
    tensors = edit(dict(load_file(str(src / WEIGHTS))))
    save_file(tensors, str(dst / WEIGHTS))
    return dst


def _key(layer: int, module: str, ab: str) -> str:
    part = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    return f"{PREFIX}.{layer}.{part}.{module}.lora_{ab}.weight"


def widen_lora_a(src: Path, dst: Path, *, module: str = "v_proj", layer: int = 0, extra: int = 7) -> Path:
    """lora_A of `module` at `layer` gets `extra` more input columns (same rank)."""
    key = _key(layer, module, "A")

    def edit(t):
        a = t[key]
        t[key] = np.concatenate([a, np.zeros((a.shape[0], extra), dtype=a.dtype)], axis=1)
        return t

    return _rewrite(src, dst, edit)


def narrow_lora_b(src: Path, dst: Path, *, module: str = "v_proj", layer: int = 0, fewer: int = 3) -> Path:
    """lora_B of `module` at `layer` loses `fewer` output rows (same rank)."""
    key = _key(layer, module, "B")

    def edit(t):
        t[key] = t[key][:-fewer].copy()
        return t

    return _rewrite(src, dst, edit)


def extra_layer(src: Path, dst: Path, *, module: str = "v_proj", layer: int = 7, like: int = 0) -> Path:
    """`module`'s LoRA of layer `like` copied as layer `layer` (which a 2-layer base lacks)."""

    def edit(t):
        for ab in "AB":
            t[_key(layer, module, ab)] = t[_key(like, module, ab)]
        return t

    return _rewrite(src, dst, edit)


def mismatched_rank(src: Path, dst: Path, *, module: str = "v_proj", layer: int = 0) -> Path:
    """lora_B of one module keeps half its rank columns, lora_A keeps them all."""
    key = _key(layer, module, "B")

    def edit(t):
        t[key] = t[key][:, : t[key].shape[1] // 2].copy()
        return t

    return _rewrite(src, dst, edit)


def missing_lora_b(src: Path, dst: Path, *, module: str = "v_proj", layer: int = 0) -> Path:
    key = _key(layer, module, "B")
    return _rewrite(src, dst, lambda t: {k: v for k, v in t.items() if k != key})


def lying_rank_pattern(src: Path, dst: Path, *, module: str = "v_proj") -> Path:
    """adapter_config.json says `module` has rank r/2 (rank_pattern); its tensors are rank r."""
    shutil.copytree(src, dst)
    config = json.loads((dst / CONFIG).read_text())
    config["rank_pattern"] = {module: config["r"] // 2}
    (dst / CONFIG).write_text(json.dumps(config))
    return dst


POISONS: dict[str, Callable[[Path, Path], Path]] = {
    "lora_A 7 columns too wide": widen_lora_a,
    "lora_B 3 rows short": narrow_lora_b,
    "a layer the base lacks": extra_layer,
    "lora_A and lora_B ranks differ": mismatched_rank,
    "lora_A without lora_B": missing_lora_b,
    "rank_pattern contradicts the tensors": lying_rank_pattern,
}
