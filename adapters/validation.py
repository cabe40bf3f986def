"""Decide whether a peft LoRA folder is safe and fit to serve on a given base model.

Everything here reads files only as data: JSON and the safetensors header. Nothing is
unpickled or imported from an adapter, so a hostile upload cannot run code, and an
adapter that would crash or silently misbehave in vLLM is refused with a reason
before any engine sees it: every tensor's full shape is checked against the base
model's module dimensions (`adapters.base_model`), not just its rank, because a
matrix a few columns too wide passes a rank check and kills a vLLM engine in a
generate step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adapters.base_model import BaseModelInfo, base_model_info  # noqa: F401 - re-exported: validation's view of the base
from adapters.errors import AdapterInvalid
from adapters.safetensors_header import (  # noqa: F401 - re-exported
    FLOAT_DTYPES,
    MAX_SAFETENSORS_HEADER_BYTES,
    check_data_layout,
    read_safetensors_header,
    read_safetensors_layout,
)

# Adapter names become URL path segments, metric labels and folder names: keep them
# boring. First character alphanumeric, so "." and ".." can never be a name.
ADAPTER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

# Module suffixes a LoRA may target. lm_head and the embeddings are excluded on
# purpose: vLLM 0.32 crashes on batched prompt logprobs when lm_head carries LoRA
# (README, "Known vLLM bug"), and the engine is started without them.
PROJECTION_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FORBIDDEN_TARGET_MODULES: frozenset[str] = frozenset({"lm_head", "embed_tokens", "wte", "wpe", "embed_in", "embed_out"})

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Files that can carry pickled code; their mere presence refuses the adapter.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_CONFIG_BYTES = 64 * 1024

# `<module path>.lora_A.weight` / `.lora_B.weight`, as peft saves them and as vLLM parses
# them (a key with an adapter name in it, `lora_A.default.weight`, makes vLLM raise).
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
PEFT_PREFIX = "base_model.model."
# rank_pattern / alpha_pattern keys: module names, matched as peft and vLLM do
# (`(.*\.)?(key)$`). vLLM runs them as regular expressions inside the engine, so anything
# beyond a dotted name (a hostile pattern backtracks for minutes) is refused here.
_PATTERN_KEY = re.compile(r"^[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*$")
# peft features vLLM 0.32 refuses at load (vllm/lora/peft_helper.py): refused at upload.
_SUPPORTED_INITS = ("true", "false", "gaussian", "eva", "orthogonal", "mica", "lora_ga")


@dataclass(frozen=True)
class AdapterSpec:
    """A validated adapter: everything an engine needs to load it."""

    name: str
    path: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model: str
    fingerprint: str = field(default="", compare=False)
    version: str | None = None
    owner: str | None = None
    visibility: str = "public"
    # The version's files as its store manifest lists them: (relpath, sha256, size).
    # Empty for a legacy flat folder (no manifest), which engines load from `path` as is.
    files: tuple[tuple[str, str, int], ...] = field(default=(), compare=False)
    # The served name of the base the fleet binds it to (its `base_model` resolved through
    # each served base's accepted names): only that base's engines ever load it.
    base: str = ""

    @property
    def served_id(self) -> str:
        """The id engines, routers and vLLM know this adapter by (`multiplexed_model_id`,
        vLLM's lora_name, residency): `name@version` for a published version, so two
        versions are two LoRAs and a new version can never hit a stale engine cache;
        the bare name for a legacy flat folder (its only version)."""
        return f"{self.name}@{self.version}" if self.files else self.name


@dataclass(frozen=True)
class ServedBase:
    """A base model the fleet serves, with the engine limits its adapters must fit."""

    info: BaseModelInfo
    max_lora_rank: int
    allowed_target_modules: tuple[str, ...] = PROJECTION_MODULES

    @property
    def name(self) -> str:
        return self.info.served_name


def base_for(base_model: object, bases: Sequence[ServedBase]) -> ServedBase:
    """The served base an adapter's `base_model_name_or_path` names (a served name, alias,
    source or folder name; unique across the fleet), or AdapterInvalid naming the bases
    this fleet serves."""
    if isinstance(base_model, str):  # a list is unhashable: check the type first
        for base in bases:
            if base_model in base.info.accepted_names:
                return base
    served = ", ".join(repr(b.name) for b in bases)
    what = "this fleet serves" if len(bases) == 1 else "this fleet serves none of it; it serves"
    raise AdapterInvalid(f"adapter was trained on base model {base_model!r}, {what} {served}")


def check_adapter_name(name: object, param: str = "model") -> str:
    if not isinstance(name, str) or not ADAPTER_NAME_PATTERN.fullmatch(name):
        raise AdapterInvalid(
            f"invalid adapter name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            param=param,
        )
    return name


def _load_config(folder: Path) -> dict:
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise AdapterInvalid(f"missing {ADAPTER_CONFIG}")
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise AdapterInvalid(f"{ADAPTER_CONFIG} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise AdapterInvalid(f"{ADAPTER_CONFIG} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise AdapterInvalid(f"{ADAPTER_CONFIG} must be a JSON object")
    return config


def _target_modules(config: dict) -> tuple[str, ...]:
    raw = config.get("target_modules")
    if isinstance(raw, str):
        if not re.fullmatch(r"[A-Za-z0-9_]+", raw):
            raise AdapterInvalid("target_modules given as a regular expression is not supported; list the module names")
        return (raw,)
    if not isinstance(raw, list) or not raw or not all(isinstance(m, str) and m for m in raw):
        raise AdapterInvalid("target_modules must be a non-empty list of module names")
    return tuple(sorted(set(raw)))


def _positive_int(config: dict, key: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AdapterInvalid(f"{key} must be a positive integer, got {value!r}")
    return value


def validate_adapter(
    folder: Path,
    *,
    base: BaseModelInfo | None = None,
    max_lora_rank: int = 16,
    allowed_target_modules: tuple[str, ...] = PROJECTION_MODULES,
    name: str | None = None,
    bases: Sequence[ServedBase] = (),
) -> AdapterSpec:
    """Return the adapter's spec, or raise AdapterInvalid naming the first problem.
    `name` defaults to the folder's name (the flat store layout).

    Checked against one base (`base` with the engine limits given), or against the one
    of several served `bases` its `base_model_name_or_path` names, with that base's
    module shapes and limits: an adapter of base B is checked as B's, never as another
    base's whose module names happen to match. The spec records that base (`spec.base`)."""
    if not bases:
        if base is None:
            raise TypeError("validate_adapter needs `base` or `bases`")
        bases = (ServedBase(base, max_lora_rank, allowed_target_modules),)
    name = check_adapter_name(folder.name if name is None else name)
    if not folder.is_dir():
        raise AdapterInvalid(f"adapter {name!r} is not a folder")

    pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise AdapterInvalid(f"pickle weight files are refused (use safetensors): {', '.join(pickles)}")

    config = _load_config(folder)
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterInvalid(f"peft_type must be LORA, got {config.get('peft_type')!r}")

    base_name = config.get("base_model_name_or_path")
    served = base_for(base_name, bases)
    base, max_lora_rank, allowed_target_modules = served.info, served.max_lora_rank, served.allowed_target_modules

    rank = _positive_int(config, "r")
    rank_pattern = _pattern(config, "rank_pattern", int)
    ranks = [rank, *rank_pattern.values()]
    if max(ranks) > max_lora_rank:
        raise AdapterInvalid(f"adapter rank {max(ranks)} exceeds this fleet's max_lora_rank {max_lora_rank}")

    alpha = config.get("lora_alpha", rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise AdapterInvalid(f"lora_alpha must be a positive number, got {alpha!r}")
    _pattern(config, "alpha_pattern", (int, float))
    _check_features(config)

    targets = _target_modules(config)
    forbidden = FORBIDDEN_TARGET_MODULES.intersection(targets)
    if forbidden:
        raise AdapterInvalid(
            f"adapters may not target {sorted(forbidden)}: LoRA on lm_head/embeddings is disabled on this fleet "
            f"(allowed: {', '.join(allowed_target_modules)})"
        )
    if config.get("use_dora"):
        raise AdapterInvalid("DoRA adapters (use_dora) are not supported by the engine")
    if config.get("modules_to_save"):
        raise AdapterInvalid("modules_to_save is not supported: adapters may only carry LoRA weights")
    missing = sorted(set(targets) - base.module_names)
    if missing:
        raise AdapterInvalid(f"target modules {missing} do not exist in the base model")
    not_enabled = sorted(set(targets) - set(allowed_target_modules))
    if not_enabled:
        raise AdapterInvalid(f"target modules {not_enabled} are not enabled on this fleet (allowed: {', '.join(allowed_target_modules)})")

    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise AdapterInvalid(f"missing {ADAPTER_WEIGHTS}")
    header, data_bytes = read_safetensors_layout(weights)
    _check_weights(header, targets, max_lora_rank, base, rank, rank_pattern)
    check_data_layout(header, data_bytes, ADAPTER_WEIGHTS)

    return AdapterSpec(
        name=name,
        path=str(folder.resolve()),
        rank=max(ranks),
        alpha=float(alpha),
        target_modules=targets,
        base_model=str(base_name),
        base=base.served_name,
    )


def _pattern(config: dict, key: str, kind) -> dict:
    """`rank_pattern` / `alpha_pattern`: {module name: positive number}."""
    pattern = config.get(key) or {}
    if not isinstance(pattern, dict):
        raise AdapterInvalid(f"{key} must be an object")
    for module, value in pattern.items():
        if not _PATTERN_KEY.fullmatch(module):
            raise AdapterInvalid(
                f"{key} key {module[:80]!r} is not a module name (regular expressions are not supported; "
                "name the module, e.g. 'q_proj' or 'model.layers.0.self_attn.q_proj')"
            )
        if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
            raise AdapterInvalid(f"{key}[{module!r}] must be a positive {'integer' if kind is int else 'number'}")
    return pattern


def _check_features(config: dict) -> None:
    """peft features that change what the adapter computes and that the engine does not
    implement (vLLM refuses them at load): refused at upload instead."""
    if config.get("bias", "none") not in ("none", None):
        raise AdapterInvalid(f"bias={config.get('bias')!r} is not supported: adapters may not train biases")
    for key, what in (("lora_bias", "LoRA bias"), ("alora_invocation_tokens", "Activated LoRA (aLoRA)"),
                      ("layer_replication", "layer_replication"), ("use_bdlora", "block-diagonal LoRA"),
                      ("use_qalora", "QALoRA")):
        if config.get(key):
            raise AdapterInvalid(f"{key} is set: {what} is not supported by the engine")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _SUPPORTED_INITS:
        raise AdapterInvalid(
            f"init_lora_weights={init!r} modifies the base model's weights (PiSSA, OLoRA, CorDA, LoftQ); "
            "convert the adapter to a plain LoRA first"
        )


def pattern_value(pattern: dict, module_path: str, default):
    """The value peft and vLLM use for `module_path`: the first key that matches it as a
    dotted suffix (`(.*\\.)?(key)$`), else `default`. Keys are plain names (`_pattern`)."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module_path):
            return value
    return default


def _check_weights(
    header: dict[str, dict],
    targets: tuple[str, ...],
    max_lora_rank: int,
    base: BaseModelInfo,
    rank: int,
    rank_pattern: dict,
) -> None:
    """Every tensor is a LoRA matrix of a targeted module the base has, shaped exactly
    `lora_A [r, in_features]` / `lora_B [out_features, r]` with the module's r (its
    rank_pattern entry, else `r`), and each module has both matrices."""
    if not header:
        raise AdapterInvalid(f"{ADAPTER_WEIGHTS} holds no tensors")
    halves: dict[str, set[str]] = {}
    for key, info in header.items():
        match = _LORA_KEY.match(key)
        if not match:
            raise AdapterInvalid(f"unexpected tensor {key!r}: only lora_A/lora_B weights are allowed")
        module_path = match.group("module").removeprefix(PEFT_PREFIX)
        module = module_path.split(".")[-1]
        if module not in targets:
            raise AdapterInvalid(f"tensor {key!r} is for module {module!r}, which is not in target_modules")
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise AdapterInvalid(f"tensor {key!r} must be a 2-D matrix")
        if info.get("dtype") not in FLOAT_DTYPES:
            raise AdapterInvalid(f"tensor {key!r} has dtype {info.get('dtype')!r}; LoRA weights must be {', '.join(FLOAT_DTYPES)}")
        ab = match.group("ab")
        tensor_rank = shape[0] if ab == "A" else shape[1]
        if tensor_rank > max_lora_rank:
            raise AdapterInvalid(f"tensor {key!r} has rank {tensor_rank}, above max_lora_rank {max_lora_rank}")
        dims = base.modules.get(module_path)
        if dims is None:
            raise AdapterInvalid(
                f"tensor {key!r} is for module {module_path!r}, which this base model does not have "
                f"({base.num_layers} layers; e.g. {_example_module(base, module)!r})"
            )
        in_features, out_features = dims
        expected_rank = pattern_value(rank_pattern, module_path, rank)
        expected = [expected_rank, in_features] if ab == "A" else [out_features, expected_rank]
        if shape != expected:
            raise AdapterInvalid(
                f"tensor {key!r} has shape {shape}, expected {expected}: lora_{ab} of {module_path} "
                f"(in_features {in_features}, out_features {out_features}) at rank {expected_rank}"
            )
        halves.setdefault(module_path, set()).add(ab)
    for module_path, present in sorted(halves.items()):
        if present != {"A", "B"}:
            missing = "lora_B" if "A" in present else "lora_A"
            raise AdapterInvalid(f"module {module_path} has no {missing} tensor; a LoRA needs both lora_A and lora_B")


def _example_module(base: BaseModelInfo, module: str) -> str:
    return next((p for p in base.modules if p.rsplit(".", 1)[-1] == module), next(iter(base.modules), "none"))
