"""Decide whether a peft LoRA folder is safe and fit to serve on a given base model.

Everything here reads files only as data: JSON and the safetensors header. Nothing is
unpickled or imported from an adapter, so a hostile upload cannot run code, and an
adapter that would crash or silently misbehave in vLLM is refused with a reason
before any engine sees it.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import AdapterInvalid

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
MAX_SAFETENSORS_HEADER_BYTES = 16 * 1024 * 1024

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


@dataclass(frozen=True)
class BaseModelInfo:
    """What an adapter is checked against. `module_names` is empty when the base is
    not a local folder (a hub id): then target modules are checked only against
    the engine's allowed set."""

    accepted_names: frozenset[str]
    module_names: frozenset[str] = frozenset()


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

    @property
    def served_id(self) -> str:
        """The id engines, routers and vLLM know this adapter by (`multiplexed_model_id`,
        vLLM's lora_name, residency): `name@version` for a published version, so two
        versions are two LoRAs and a new version can never hit a stale engine cache;
        the bare name for a legacy flat folder (its only version)."""
        return f"{self.name}@{self.version}" if self.files else self.name


def check_adapter_name(name: object, param: str = "model") -> str:
    if not isinstance(name, str) or not ADAPTER_NAME_PATTERN.fullmatch(name):
        raise AdapterInvalid(
            f"invalid adapter name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            param=param,
        )
    return name


def base_model_info(source: str, served_name: str, aliases: tuple[str, ...] = ()) -> BaseModelInfo:
    """Build the checks' view of the base model from its folder (if local)."""
    names = {served_name, source, *aliases}
    path = Path(source)
    modules: set[str] = set()
    if path.is_dir():
        names.add(path.name)
        for weights in sorted(path.glob("*.safetensors")):
            for key in read_safetensors_header(weights):
                parts = key.split(".")
                if len(parts) >= 2 and parts[-1] in ("weight", "bias"):
                    modules.add(parts[-2])
    return BaseModelInfo(accepted_names=frozenset(names), module_names=frozenset(modules))


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor name -> {dtype, shape, data_offsets}, read without loading any tensor."""
    try:
        with path.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise AdapterInvalid(f"{path.name} is not a safetensors file (too short)")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > MAX_SAFETENSORS_HEADER_BYTES:
                raise AdapterInvalid(f"{path.name} has an implausible safetensors header ({header_len} bytes)")
            header = json.loads(f.read(header_len))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise AdapterInvalid(f"{path.name} is not a readable safetensors file: {err}") from None
    if not isinstance(header, dict):
        raise AdapterInvalid(f"{path.name} has a malformed safetensors header")
    header.pop("__metadata__", None)
    return header


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
    base: BaseModelInfo,
    max_lora_rank: int,
    allowed_target_modules: tuple[str, ...] = PROJECTION_MODULES,
    name: str | None = None,
) -> AdapterSpec:
    """Return the adapter's spec, or raise AdapterInvalid naming the first problem.
    `name` defaults to the folder's name (the flat store layout)."""
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
    if not isinstance(base_name, str) or base_name not in base.accepted_names:  # a list is unhashable: check type first
        raise AdapterInvalid(
            f"adapter was trained on base model {base_name!r}, this fleet serves {sorted(base.accepted_names)[0]!r}"
        )

    rank = _positive_int(config, "r")
    ranks = [rank]
    rank_pattern = config.get("rank_pattern") or {}
    if not isinstance(rank_pattern, dict):
        raise AdapterInvalid("rank_pattern must be an object")
    for module, r in rank_pattern.items():
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise AdapterInvalid(f"rank_pattern[{module!r}] must be a positive integer")
        ranks.append(r)
    if max(ranks) > max_lora_rank:
        raise AdapterInvalid(f"adapter rank {max(ranks)} exceeds this fleet's max_lora_rank {max_lora_rank}")

    alpha = config.get("lora_alpha", rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise AdapterInvalid(f"lora_alpha must be a positive number, got {alpha!r}")

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
    if base.module_names:
        missing = sorted(set(targets) - base.module_names)
        if missing:
            raise AdapterInvalid(f"target modules {missing} do not exist in the base model")
    not_enabled = sorted(set(targets) - set(allowed_target_modules))
    if not_enabled:
        raise AdapterInvalid(f"target modules {not_enabled} are not enabled on this fleet (allowed: {', '.join(allowed_target_modules)})")

    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise AdapterInvalid(f"missing {ADAPTER_WEIGHTS}")
    _check_weights(read_safetensors_header(weights), targets, max_lora_rank)

    return AdapterSpec(
        name=name,
        path=str(folder.resolve()),
        rank=max(ranks),
        alpha=float(alpha),
        target_modules=targets,
        base_model=str(base_name),
    )


def _check_weights(header: dict[str, dict], targets: tuple[str, ...], max_lora_rank: int) -> None:
    if not header:
        raise AdapterInvalid(f"{ADAPTER_WEIGHTS} holds no tensors")
    for key, info in header.items():
        match = _LORA_KEY.match(key)
        if not match:
            raise AdapterInvalid(f"unexpected tensor {key!r}: only lora_A/lora_B weights are allowed")
        module = match.group("module").split(".")[-1]
        if module not in targets:
            raise AdapterInvalid(f"tensor {key!r} is for module {module!r}, which is not in target_modules")
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise AdapterInvalid(f"tensor {key!r} must be a 2-D matrix")
        rank = shape[0] if match.group("ab") == "A" else shape[1]
        if rank > max_lora_rank:
            raise AdapterInvalid(f"tensor {key!r} has rank {rank}, above max_lora_rank {max_lora_rank}")
