"""Content fingerprints recorded in the training manifest: which exact base model and
dataset produced an adapter, so a result can be traced and reproduced."""

from __future__ import annotations

import hashlib
from pathlib import Path

from adapters.manifest import sha256_file

# Files that define the base model's behaviour: its config and its weights.
_BASE_FILE_PATTERNS = ("config.json", "*.safetensors")


def base_model_folder(source: str) -> Path:
    """The local folder of a base model: `source` itself, or the hub cache snapshot
    of a hub id (config and safetensors only; downloaded if not cached)."""
    path = Path(source)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, allow_patterns=list(_BASE_FILE_PATTERNS)))


def base_model_fingerprint(folder: Path) -> str:
    """sha256 over (relative name, sha256 of content) of config.json and every
    *.safetensors file, in name order: independent of where the folder lives."""
    files = sorted({p for pattern in _BASE_FILE_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"{folder} has no config.json or *.safetensors to fingerprint")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()
