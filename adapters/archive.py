"""Unpack an uploaded adapter archive (tar.gz) without trusting anything in it.

An upload is hostile until proven otherwise: member names may climb out of the
target folder (`../`, absolute paths), members may be links or device files, and a
few KB of gzip can claim gigabytes (a tar bomb). The archive is read as a stream,
every member is checked before a byte of it is written, and the running total of
unpacked bytes and files is capped, so a bad archive fails fast with a message that
names the member at fault and leaves nothing behind but a temp folder the caller removes.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from adapters.errors import AdapterInvalid, PayloadTooLarge
from adapters.validation import ADAPTER_CONFIG, PICKLE_SUFFIXES

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_unpacked_bytes: int
    max_files: int


def _safe_member_path(name: str) -> PurePosixPath:
    """The member's path relative to the target, or AdapterInvalid if it could escape."""
    if not name or "\\" in name or "\x00" in name:
        raise AdapterInvalid(f"archive member {name!r} has an invalid name")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise AdapterInvalid(f"archive member {name!r} has an absolute path")
    if ".." in path.parts:
        raise AdapterInvalid(f"archive member {name!r} escapes the adapter folder ('..')")
    parts = [p for p in path.parts if p != "."]
    if not parts:
        raise AdapterInvalid(f"archive member {name!r} has an empty path")
    return PurePosixPath(*parts)


def _member_kind_error(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return "is a symbolic link"
    if member.islnk():
        return "is a hard link"
    if member.ischr() or member.isblk():
        return "is a device file"
    if member.isfifo():
        return "is a FIFO"
    if not (member.isreg() or member.isdir()):
        return "is not a regular file or folder"
    return None


def extract_adapter_archive(stream: BinaryIO, dest: Path, limits: ArchiveLimits) -> Path:
    """Unpack a tar.gz of a peft folder into `dest` (which must exist and be empty);
    return the adapter folder (`dest`, or its single top-level folder when the archive
    wraps the files in one, as `tar czf x.tgz mydir/` does)."""
    total = 0
    files = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for member in tar:
                relative = _safe_member_path(member.name)
                problem = _member_kind_error(member)
                if problem:
                    raise AdapterInvalid(f"archive member {member.name!r} {problem}; only regular files are accepted")
                if relative.name.endswith(PICKLE_SUFFIXES):
                    raise AdapterInvalid(f"pickle weight files are refused (use safetensors): {member.name}")
                target = dest.joinpath(*relative.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                files += 1
                if files > limits.max_files:
                    raise PayloadTooLarge(f"the archive holds more than {limits.max_files} files")
                total += member.size
                if total > limits.max_unpacked_bytes:
                    raise PayloadTooLarge(
                        f"the archive unpacks to more than {limits.max_unpacked_bytes} bytes (at member {member.name!r})"
                    )
                if target.exists():
                    raise AdapterInvalid(f"archive member {member.name!r} appears twice")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with target.open("wb") as out:
                    remaining = member.size
                    while remaining > 0:
                        block = source.read(min(_CHUNK, remaining))
                        if not block:
                            raise AdapterInvalid(f"archive member {member.name!r} is truncated")
                        out.write(block)
                        remaining -= len(block)
    except (tarfile.TarError, zlib.error, EOFError, gzip.BadGzipFile) as err:  # disk errors (OSError) propagate
        raise AdapterInvalid(f"the upload is not a valid tar.gz archive: {err}") from None
    if files == 0:
        raise AdapterInvalid("the archive holds no files")
    return _adapter_root(dest)


def _adapter_root(dest: Path) -> Path:
    if (dest / ADAPTER_CONFIG).exists():
        return dest
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / ADAPTER_CONFIG).exists():
        return entries[0]
    raise AdapterInvalid(f"the archive has no {ADAPTER_CONFIG} at its top level (or in a single top-level folder)")


def pack_folder(folder: Path) -> bytes:
    """A tar.gz of the regular files under `folder`, paths relative to it (what `push` sends
    and `pull` receives)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()
