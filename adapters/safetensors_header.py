"""Read a safetensors file's header (tensor names, dtypes, shapes, offsets) as data.

The header is JSON after an 8-byte little-endian length; nothing past it is read and
nothing is unpickled. The same parser serves local files, S3 ranged GETs and the hub,
so a base model's dimensions and an adapter's tensors are read by one rule.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from adapters.errors import AdapterInvalid

MAX_SAFETENSORS_HEADER_BYTES = 16 * 1024 * 1024
HEADER_PREFIX_BYTES = 8

# Bytes per element of the dtypes a LoRA tensor may have (vLLM casts them to its LoRA dtype).
FLOAT_DTYPES: dict[str, int] = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}


def header_length(prefix: bytes, what: str) -> int:
    """The header's length from the file's first 8 bytes; AdapterInvalid if implausible."""
    if len(prefix) != HEADER_PREFIX_BYTES:
        raise AdapterInvalid(f"{what} is not a safetensors file (too short)")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_SAFETENSORS_HEADER_BYTES:
        raise AdapterInvalid(f"{what} has an implausible safetensors header ({length} bytes)")
    return length


def parse_header(raw: bytes, what: str) -> dict[str, dict]:
    """Tensor name -> {dtype, shape, data_offsets}; `__metadata__` dropped."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise AdapterInvalid(f"{what} is not a readable safetensors file: {err}") from None
    if not isinstance(header, dict):
        raise AdapterInvalid(f"{what} has a malformed safetensors header")
    header.pop("__metadata__", None)
    return header


def read_safetensors_layout(path: Path) -> tuple[dict[str, dict], int]:
    """(header, bytes of tensor data after it) of a local safetensors file."""
    try:
        with path.open("rb") as f:
            length = header_length(f.read(HEADER_PREFIX_BYTES), path.name)
            raw = f.read(length)
            size = path.stat().st_size
    except OSError as err:
        raise AdapterInvalid(f"{path.name} is not a readable safetensors file: {err}") from None
    if len(raw) != length:
        raise AdapterInvalid(f"{path.name} is not a readable safetensors file: its header is truncated")
    return parse_header(raw, path.name), size - HEADER_PREFIX_BYTES - length


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor name -> {dtype, shape, data_offsets}, read without loading any tensor."""
    return read_safetensors_layout(path)[0]


def check_data_layout(header: dict[str, dict], data_bytes: int, what: str) -> None:
    """The offsets must tile the data exactly, each tensor's span matching its shape and
    dtype: the rule the safetensors loader itself applies, checked before an engine runs it."""
    spans = []
    for key, info in header.items():
        offsets = info.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and o >= 0 for o in offsets)):
            raise AdapterInvalid(f"{what}: tensor {key!r} has malformed data_offsets")
        start, end = offsets
        numel = 1
        for dim in info["shape"]:
            numel *= dim
        if end - start != numel * FLOAT_DTYPES[info["dtype"]]:
            raise AdapterInvalid(
                f"{what}: tensor {key!r} spans {end - start} bytes, but a {info['dtype']} tensor of shape "
                f"{info['shape']} needs {numel * FLOAT_DTYPES[info['dtype']]}"
            )
        spans.append((start, end, key))
    position = 0
    for start, end, key in sorted(spans):
        if start != position:
            raise AdapterInvalid(f"{what}: tensor {key!r} does not start where the previous one ends (offset {start})")
        position = end
    if position != data_bytes:
        raise AdapterInvalid(f"{what}: the tensors cover {position} bytes, the file holds {data_bytes}")
