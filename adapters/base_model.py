"""What an adapter is checked against: the base model's names and the shape of every
module a LoRA may attach to.

A LoRA for module M of the base is two matrices, `lora_A` `[r, in_features(M)]` and
`lora_B` `[out_features(M), r]` (peft's `nn.Linear(in, r)` / `nn.Linear(r, out)`
weights). An adapter whose matrices do not fit the module passes a rank-only check and
then fails inside an engine: vLLM 0.32 raises inside a generate step and its engine
dies. So every tensor is checked against `BaseModelInfo.modules` (module path ->
(in_features, out_features)) before any engine sees it, and a base whose dimensions
cannot be known refuses to start instead of skipping the check.

`base_model_info` is the one builder, for every kind of `model.source`:

- a local folder: the safetensors headers of its weights (exact, any architecture: a
  2-D `<module>.weight` of shape [out, in] gives the module), else `config.json`;
- `s3://bucket/prefix`: the same, read from the bucket (headers by ranged GET);
- a hub id: `config.json` through `huggingface_hub` (which honours `HF_TOKEN`,
  `HF_HUB_OFFLINE` and the local HF cache), else the hub's safetensors headers.

From `config.json` alone, dimensions are derived for the Llama family (Llama, Mistral,
Qwen2, Qwen3: the same projection names and formulas); any other architecture needs
readable weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import AdapterInvalid, BaseModelUnknown
from adapters.safetensors_header import HEADER_PREFIX_BYTES, header_length, parse_header, read_safetensors_header

CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 1024 * 1024

# model_type -> the projections of one decoder layer, relative to `model.layers.<i>`.
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class BaseModelInfo:
    """The base model as validation sees it.

    `modules` maps a module path as adapters name it (peft's key without the
    `base_model.model.` prefix and the `.lora_A.weight` suffix, e.g.
    `model.layers.0.self_attn.q_proj`) to `(in_features, out_features)`;
    `num_layers` is the decoder's depth (for messages); `dims_from` says where the
    dimensions came from; `name` is the name the fleet serves it under."""

    accepted_names: frozenset[str]
    modules: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    num_layers: int = 0
    dims_from: str = ""
    name: str = ""

    @property
    def served_name(self) -> str:
        return self.name or min(self.accepted_names, default="")

    @property
    def module_names(self) -> frozenset[str]:
        """The modules' last path components (`q_proj`, ...): what target_modules name."""
        return frozenset(path.rsplit(".", 1)[-1] for path in self.modules)


def base_model_info(
    source: str,
    served_name: str,
    aliases: tuple[str, ...] = (),
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
) -> BaseModelInfo:
    """Describe the base at `source` (local folder, s3:// URI or hub id); BaseModelUnknown
    when its module dimensions cannot be read (the fleet must not start then)."""
    names = {served_name, source, *aliases}
    if source.startswith("s3://"):
        reader: _Reader = _S3Reader(source, s3_endpoint_url, s3_region)
    elif Path(source).is_dir():
        names.add(Path(source).name)
        reader = _LocalReader(Path(source))
    else:
        reader = _HubReader(source)
    modules, layers, dims_from = _describe(reader, source)
    return BaseModelInfo(accepted_names=frozenset(names), modules=modules, num_layers=layers, dims_from=dims_from,
                         name=served_name)


def _describe(reader: "_Reader", source: str) -> tuple[dict[str, tuple[int, int]], int, str]:
    """Exact shapes from the weights' headers where readable, over shapes derived from
    config.json (which also covers modules whose weights are stored in another form,
    e.g. quantized `qweight`s)."""
    config = reader.config()
    derived: dict[str, tuple[int, int]] = {}
    cannot_derive: BaseModelUnknown | None = None
    if config is not None:
        try:
            derived = modules_from_config(config, source)
        except BaseModelUnknown as err:
            cannot_derive = err
    exact: dict[str, tuple[int, int]] = {}
    if reader.read_headers_anyway or not derived:
        try:
            exact = modules_from_headers(reader.headers())
        except BaseModelUnknown as err:
            if cannot_derive is None:
                raise
            raise BaseModelUnknown(f"{cannot_derive.message}; and {err.message}") from None
    if not derived and not exact:
        raise cannot_derive or BaseModelUnknown(
            f"cannot read the base model {source!r}: no {CONFIG_FILE} and no safetensors weights found "
            "(adapter shapes could not be checked, so the fleet does not start)"
        )
    sources = [name for name, found in (("safetensors headers", exact), (CONFIG_FILE, derived)) if found]
    modules = {**derived, **exact}
    return modules, _layers(config) or _layers_in(modules), " + ".join(sources)


def modules_from_headers(headers: list[dict[str, dict]]) -> dict[str, tuple[int, int]]:
    """Every 2-D `<module>.weight` of shape [out, in] -> (in, out)."""
    modules = {}
    for header in headers:
        for key, info in header.items():
            shape = info.get("shape") if isinstance(info, dict) else None
            if not key.endswith(".weight") or not isinstance(shape, list) or len(shape) != 2:
                continue
            if all(isinstance(d, int) and d > 0 for d in shape):
                modules[key.removesuffix(".weight")] = (shape[1], shape[0])
    return modules


def modules_from_config(config: dict, source: str = "the base model") -> dict[str, tuple[int, int]]:
    """Projection dimensions of a Llama-family decoder from its config.json."""
    model_type = config.get("model_type")
    if model_type not in LLAMA_FAMILY:
        raise BaseModelUnknown(
            f"cannot derive the module shapes of {source!r} (model_type {model_type!r}) from {CONFIG_FILE}: only the "
            f"Llama family ({', '.join(LLAMA_FAMILY)}) is known; give a base whose safetensors weights are readable"
        )

    def positive(key: str, default: int | None = None) -> int:
        value = config.get(key, default)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise BaseModelUnknown(f"{source!r}: {CONFIG_FILE} field {key} must be a positive integer, got {value!r}")
        return value

    hidden = positive("hidden_size")
    heads = positive("num_attention_heads")
    kv_heads = positive("num_key_value_heads", heads)
    head_dim = positive("head_dim", hidden // heads)
    inter = positive("intermediate_size")
    layers = positive("num_hidden_layers")
    per_layer = {
        "self_attn.q_proj": (hidden, heads * head_dim),
        "self_attn.k_proj": (hidden, kv_heads * head_dim),
        "self_attn.v_proj": (hidden, kv_heads * head_dim),
        "self_attn.o_proj": (heads * head_dim, hidden),
        "mlp.gate_proj": (hidden, inter),
        "mlp.up_proj": (hidden, inter),
        "mlp.down_proj": (inter, hidden),
    }
    return {f"model.layers.{i}.{m}": dims for i in range(layers) for m, dims in per_layer.items()}


def _layers(config: dict | None) -> int:
    value = (config or {}).get("num_hidden_layers")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _layers_in(modules: Mapping[str, tuple[int, int]]) -> int:
    indices = [int(p.split(".")[i + 1]) for p in modules for i, part in enumerate(p.split(".")[:-1])
               if part == "layers" and p.split(".")[i + 1].isdigit()]
    return max(indices) + 1 if indices else 0


def _parse_config(raw: bytes, source: str) -> dict:
    if len(raw) > MAX_CONFIG_BYTES:
        raise BaseModelUnknown(f"{source!r}: {CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise BaseModelUnknown(f"{source!r}: {CONFIG_FILE} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise BaseModelUnknown(f"{source!r}: {CONFIG_FILE} is not a JSON object")
    return config


class _Reader:
    # Local folders and buckets: read the weights' headers even when config.json
    # suffices (exact, and cheap). The hub: only when it does not (network).
    read_headers_anyway = True

    def config(self) -> dict | None:
        raise NotImplementedError

    def headers(self) -> list[dict[str, dict]]:
        raise NotImplementedError


class _LocalReader(_Reader):
    def __init__(self, folder: Path):
        self.folder = folder

    def config(self) -> dict | None:
        path = self.folder / CONFIG_FILE
        if not path.is_file():
            return None
        with path.open("rb") as f:
            return _parse_config(f.read(MAX_CONFIG_BYTES + 1), str(self.folder))

    def headers(self) -> list[dict[str, dict]]:
        try:
            return [read_safetensors_header(p) for p in sorted(self.folder.glob("*.safetensors"))]
        except AdapterInvalid as err:
            raise BaseModelUnknown(f"base model {str(self.folder)!r}: {err.message}") from None


class _S3Reader(_Reader):
    """config.json and safetensors headers from a bucket: ranged GETs, never the weights."""

    def __init__(self, uri: str, endpoint_url: str | None, region: str | None):
        from adapters.store_s3 import make_s3_client, parse_s3_uri

        self.uri = uri
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.client = make_s3_client(endpoint_url, region)

    def _get(self, key: str, first: int, last: int) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={first}-{last}")["Body"]
            try:
                return body.read(last - first + 1)
            finally:
                body.close()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise BaseModelUnknown(f"cannot read {self.uri}: {err}") from None

    def config(self) -> dict | None:
        raw = self._get(self.prefix + CONFIG_FILE, 0, MAX_CONFIG_BYTES)
        return None if raw is None else _parse_config(raw, self.uri)

    def headers(self) -> list[dict[str, dict]]:
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".safetensors")]
        headers = []
        for key in sorted(keys):
            try:
                length = header_length(self._get(key, 0, HEADER_PREFIX_BYTES - 1) or b"", key)
                raw = self._get(key, HEADER_PREFIX_BYTES, HEADER_PREFIX_BYTES + length - 1) or b""
                headers.append(parse_header(raw, key))
            except AdapterInvalid as err:
                raise BaseModelUnknown(f"base model {self.uri}: {err.message}") from None
        return headers


class _HubReader(_Reader):
    """A hub id through huggingface_hub: its cache, HF_TOKEN and HF_HUB_OFFLINE apply.
    config.json first (readable offline from the cache); the safetensors headers (HTTP
    ranged reads) only for an architecture config.json cannot describe."""

    read_headers_anyway = False

    def __init__(self, repo_id: str):
        self.repo_id = repo_id

    def config(self) -> dict | None:
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(self.repo_id, CONFIG_FILE)
        except Exception as err:  # noqa: BLE001 - hub errors (offline, 401, 404) all mean "cannot read"
            raise BaseModelUnknown(
                f"cannot read {CONFIG_FILE} of the base model {self.repo_id!r} (not a local folder or s3:// URI, "
                f"so read as a hub id): {type(err).__name__}: {err}"
            ) from None
        with open(path, "rb") as f:
            return _parse_config(f.read(MAX_CONFIG_BYTES + 1), self.repo_id)

    def headers(self) -> list[dict[str, dict]]:
        from huggingface_hub import get_safetensors_metadata

        try:
            metadata = get_safetensors_metadata(self.repo_id)
        except Exception as err:  # noqa: BLE001
            raise BaseModelUnknown(f"cannot read the safetensors headers of {self.repo_id!r} from the hub: {err}") from None
        return [
            {name: {"shape": list(info.shape), "dtype": info.dtype} for name, info in file_meta.tensors.items()}
            for file_meta in metadata.files_metadata.values()
        ]
