"""The manifest of one published adapter version: what the store promises a replica.

A version is visible only once its manifest exists (the store writes it last), and a
replica loading the version checks every file against the sha256 the manifest lists,
so a half-written or corrupted version can never reach an engine. The manifest also
carries what the API shows without reading any weights (rank, target modules, base
model, owner, visibility).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from adapters.errors import AdapterInvalid

MANIFEST_NAME = "manifest.json"
FORMAT = 1
VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,8}$")
VISIBILITIES = ("public", "private")
SOURCES = ("upload", "import")


def check_version(version: object) -> str:
    """Versions are positive integers (as strings): `latest` is simply the largest."""
    text = str(version) if isinstance(version, int) and not isinstance(version, bool) else version
    if not isinstance(text, str) or not VERSION_PATTERN.fullmatch(text):
        raise AdapterInvalid(f"invalid version {version!r}: use a positive integer such as 1, 2, 3", param="version")
    return text


def check_visibility(visibility: object) -> str:
    if visibility not in VISIBILITIES:
        raise AdapterInvalid(f"invalid visibility {visibility!r}: use one of {', '.join(VISIBILITIES)}", param="visibility")
    return visibility  # type: ignore[return-value]


def split_model_id(model: str) -> tuple[str, str | None]:
    """`name@version` -> (name, version); `name` -> (name, None) meaning the latest."""
    name, sep, version = model.partition("@")
    return name, (version if sep else None)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_folder(folder: Path) -> dict[str, dict]:
    """relpath -> {sha256, size} for every regular file under `folder` (posix paths)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        files[path.relative_to(folder).as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def files_fingerprint(files: dict[str, dict]) -> str:
    """One sha256 over the (relpath, sha256) list: the version's content identity (cache key)."""
    canonical = json.dumps({k: v["sha256"] for k, v in sorted(files.items())}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    files: dict[str, dict]
    base_model: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    owner: str | None = None
    visibility: str = "public"
    source: str = "upload"
    created: float = field(default_factory=time.time)
    format: int = FORMAT

    @property
    def fingerprint(self) -> str:
        return files_fingerprint(self.files)

    @property
    def size(self) -> int:
        return sum(f["size"] for f in self.files.values())

    def to_json(self) -> bytes:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        data["fingerprint"] = self.fingerprint
        return json.dumps(data, indent=2, sort_keys=True).encode()

    def to_public(self) -> dict:
        """What the admin API shows (the manifest plus its derived fields)."""
        data = json.loads(self.to_json())
        data["id"] = f"{self.name}@{self.version}"
        data["size"] = self.size
        return data

    @classmethod
    def from_json(cls, raw: bytes) -> "Manifest":
        """Parse and check a stored manifest; a malformed one makes the version unservable."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            files = data["files"]
            if not isinstance(files, dict) or not files:
                raise ValueError("files must be a non-empty object")
            for relpath, info in files.items():
                if not isinstance(relpath, str) or relpath.startswith("/") or ".." in relpath.split("/"):
                    raise ValueError(f"unsafe file path {relpath!r}")
                if not (isinstance(info, dict) and isinstance(info.get("sha256"), str) and len(info["sha256"]) == 64
                        and isinstance(info.get("size"), int) and info["size"] >= 0):
                    raise ValueError(f"files[{relpath!r}] needs a sha256 and a size")
            return cls(
                name=str(data["name"]),
                version=check_version(data["version"]),
                files={k: {"sha256": v["sha256"], "size": v["size"]} for k, v in files.items()},
                base_model=str(data["base_model"]),
                rank=int(data["rank"]),
                alpha=float(data["alpha"]),
                target_modules=tuple(data["target_modules"]),
                owner=data.get("owner"),
                visibility=check_visibility(data.get("visibility", "public")),
                source=str(data.get("source", "upload")),
                created=float(data.get("created", 0.0)),
                format=int(data.get("format", FORMAT)),
            )
        except (KeyError, TypeError, ValueError, AdapterInvalid) as err:
            message = err.message if isinstance(err, AdapterInvalid) else str(err)
            raise AdapterInvalid(f"malformed store manifest: {message}") from None

    def file_entries(self) -> tuple[tuple[str, str, int], ...]:
        return tuple((k, v["sha256"], v["size"]) for k, v in sorted(self.files.items()))
