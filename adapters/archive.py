"""Unpack an uploaded adapter archive (tar.gz) without trusting anything in it, and
stream one out.

An upload is hostile until proven otherwise: member names may climb out of the target
folder (`../`, absolute paths), collide with each other, or be megabytes long; members
may be links, device files or sparse maps; and a few KB of gzip can claim gigabytes (a
tar bomb). Three bounds hold whatever the archive says:

- **Bytes out of the decompressor.** gzip is inflated here, not by tarfile, and every
  byte that comes out counts against `max_unpacked_bytes` plus a fixed allowance per
  member for headers and padding (`MEMBER_OVERHEAD_BYTES`): past it the upload is 413
  at once, whatever part of the tar (data, headers, padding) the bytes belong to.
- **Headers are refused before they are read.** CPython's tarfile reads a GNU long-name
  (`././@LongLink`) or pax header whole into memory (`TarInfo._proc_gnulong` /
  `_proc_pax` call `fileobj.read(size)`), recurses once per extended header, and collects
  a GNU sparse map block by block. `_GuardedTarInfo` checks the declared size of each
  extended header before that read (`MAX_NAME_BYTES`, `MAX_EXTENDED_HEADER_BYTES`), caps
  the extended headers in front of one member, and refuses sparse members outright.
- **Every member counts.** Folders count against `max_files` as files do; names are
  checked (UTF-8, no control characters, at most 255 bytes per path component and 1024
  per path) and must not collide with another member's, compared as a case-insensitive
  filesystem would (Unicode-normalised, case-folded), including a file and a folder of
  the same path. A hostile name is a 400 naming it, never an OSError (500).

Each check fails fast with the member at fault and leaves nothing behind but the temp
folder the caller removes. `iter_tar_gz` writes an archive as a stream of chunks (what
`pull` downloads), so a version is never held in memory whole.
"""

from __future__ import annotations

import io
import tarfile
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from adapters.errors import AdapterInvalid, PayloadTooLarge
from adapters.validation import ADAPTER_CONFIG, PICKLE_SUFFIXES

_CHUNK = 1 << 20
_INPUT_CHUNK = 64 * 1024
BLOCK = tarfile.BLOCKSIZE

MAX_NAME_BYTES = 1024
MAX_COMPONENT_BYTES = 255  # NAME_MAX of every common filesystem
MAX_EXTENDED_HEADER_BYTES = 64 * 1024  # a pax header: path, times, ids, a few xattrs
# Extended headers allowed in front of one member: a GNU long name and long link, a pax
# header and a global pax header (git archive writes one) is the most real tools write.
MAX_EXTENDED_HEADERS = 4
# Decompressed bytes a member may cost besides its data: its header, its data's padding,
# and its extended headers with theirs.
MEMBER_OVERHEAD_BYTES = 2 * BLOCK + MAX_EXTENDED_HEADERS * (2 * BLOCK + MAX_EXTENDED_HEADER_BYTES)

_EXTENDED_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_LONG_NAME_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


@dataclass(frozen=True)
class ArchiveLimits:
    max_unpacked_bytes: int
    max_files: int  # every member counts: files and folders

    @property
    def max_decompressed_bytes(self) -> int:
        """What may come out of the decompressor: the data cap, each member's header
        allowance, the end-of-archive blocks and one record of padding."""
        return self.max_unpacked_bytes + (self.max_files + 1) * MEMBER_OVERHEAD_BYTES + tarfile.RECORDSIZE + 2 * BLOCK


def _too_large(limits: ArchiveLimits, where: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the archive unpacks to more than {limits.max_unpacked_bytes} bytes{where} (adapters.max_unpacked_bytes)"
    )


class _BoundedGunzip:
    """A gzip stream's decompressed bytes, read in pieces no larger than asked for;
    PayloadTooLarge once more than `limit` bytes came out. Concatenated gzip members
    are read as one stream (as gzip(1) does); bytes after the last member that do not
    start another are ignored, as tarfile does."""

    _MAGIC = b"\x1f\x8b"

    def __init__(self, raw: BinaryIO, limit: int, limits: ArchiveLimits):
        self._raw = raw
        self._limit = limit
        self._limits = limits
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._input = b""
        self._done = False
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK
        while not self._done and size > 0:
            if self._inflate.eof:
                # Everything fed after the end marker (zlib also leaves it in
                # unconsumed_tail, so self._input is not added again).
                leftover = self._inflate.unused_data
                while len(leftover) < len(self._MAGIC):
                    more = self._raw.read(_INPUT_CHUNK)
                    if not more:
                        break
                    leftover += more
                if not leftover.startswith(self._MAGIC):
                    self._done = True
                    break
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._input = leftover
            if not self._input:
                self._input = self._raw.read(_INPUT_CHUNK)
                if not self._input:
                    raise EOFError("the compressed stream ends before its end marker (truncated upload)")
            out = self._inflate.decompress(self._input, size)
            self._input = self._inflate.unconsumed_tail
            if out:
                self.total += len(out)
                if self.total > self._limit:
                    raise _too_large(self._limits, "")
                return out
        return b""


class _GuardedTarInfo(tarfile.TarInfo):
    """tarfile's member parser with a size check in front of every read it would do
    whole. The hooks are the ones tarfile documents for subclasses (`_proc_member`,
    `fromtarfile`); the `_proc_gnusparse_*` overrides close the pax sparse formats."""

    @classmethod
    def fromtarfile(cls, tar):
        depth = getattr(tar, "_lorafleet_header_depth", 0)
        if depth > MAX_EXTENDED_HEADERS:
            raise AdapterInvalid(
                f"an archive member is preceded by more than {MAX_EXTENDED_HEADERS} extended headers"
            )
        tar._lorafleet_header_depth = depth + 1
        try:
            return super().fromtarfile(tar)
        finally:
            tar._lorafleet_header_depth = depth

    def _proc_member(self, tar):
        if self.type in _LONG_NAME_TYPES and self.size > MAX_NAME_BYTES + 1:
            raise AdapterInvalid(
                f"an archive member's name is {self.size - 1} bytes long (GNU long-name header); "
                f"names are limited to {MAX_NAME_BYTES} bytes"
            )
        if self.type in _EXTENDED_TYPES and self.size > MAX_EXTENDED_HEADER_BYTES:
            raise AdapterInvalid(
                f"an archive holds an extended header (pax) of {self.size} bytes; "
                f"the limit is {MAX_EXTENDED_HEADER_BYTES} bytes"
            )
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise AdapterInvalid(f"archive member {_shown(self.name)} is a sparse file; only regular files are accepted")
        return super()._proc_member(tar)

    def _refuse_pax_sparse(self, *args):
        raise AdapterInvalid("an archive member is a sparse file (pax GNU.sparse); only regular files are accepted")

    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_pax_sparse


def _shown(name: str, limit: int = 80) -> str:
    """A member name as messages show it: quoted, and cut short if long."""
    return repr(name if len(name) <= limit else name[:limit] + "...")


def _safe_member_path(name: str, *, folder: bool = False) -> PurePosixPath:
    """The member's path relative to the target, or AdapterInvalid if it could escape or
    is not a name every filesystem (and S3) stores as given. An empty path (`./`) is
    allowed for a folder: it is the target itself."""
    if not isinstance(name, str) or not name or "\\" in name:
        raise AdapterInvalid(f"archive member {_shown(name)} has an invalid name")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise AdapterInvalid(f"archive member {_shown(name)} has a name that is not valid UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise AdapterInvalid(f"archive member {_shown(name)} has a control character in its name")
    if len(encoded) > MAX_NAME_BYTES:
        raise AdapterInvalid(
            f"archive member {_shown(name)} has a {len(encoded)}-byte name; names are limited to {MAX_NAME_BYTES} bytes"
        )
    path = PurePosixPath(name)
    if path.is_absolute():
        raise AdapterInvalid(f"archive member {_shown(name)} has an absolute path")
    if ".." in path.parts:
        raise AdapterInvalid(f"archive member {_shown(name)} escapes the adapter folder ('..')")
    parts = [p for p in path.parts if p != "."]
    if not parts and not folder:
        raise AdapterInvalid(f"archive member {_shown(name)} has an empty path")
    for part in parts:
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise AdapterInvalid(
                f"archive member {_shown(name)} has a path component longer than {MAX_COMPONENT_BYTES} bytes"
            )
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
    if member.issparse():
        return "is a sparse file"
    if not (member.isreg() or member.isdir()):
        return "is not a regular file or folder"
    return None


def _fold(part: str) -> str:
    """A path component as a case-insensitive, normalising filesystem compares it
    (Unicode's canonical caseless match: NFD, case fold, NFD)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", part).casefold())


class _Paths:
    """Every path the archive creates (explicitly or as a parent), folded, with its kind:
    a second member that lands on a taken path is a collision."""

    def __init__(self) -> None:
        self._kinds: dict[tuple[str, ...], tuple[str, str]] = {}

    def add(self, relative: PurePosixPath, member_name: str, *, folder: bool) -> None:
        folded = tuple(_fold(p) for p in relative.parts)
        for depth in range(1, len(folded)):
            parent = folded[:depth]
            kind, first = self._kinds.setdefault(parent, ("folder", member_name))
            if kind == "file":
                raise AdapterInvalid(
                    f"archive member {_shown(member_name)} collides with the file {_shown(first)} (a file is not a folder)"
                )
        if not folded:
            return
        taken = self._kinds.get(folded)
        if taken is not None and (not folder or taken[0] == "file"):
            raise AdapterInvalid(
                f"archive member {_shown(member_name)} collides with the {taken[0]} {_shown(taken[1])} "
                "(names are compared ignoring case and Unicode normalisation)"
            )
        self._kinds.setdefault(folded, ("folder" if folder else "file", member_name))


def extract_adapter_archive(stream: BinaryIO, dest: Path, limits: ArchiveLimits) -> Path:
    """Unpack a tar.gz of a peft folder into `dest` (which must exist and be empty);
    return the adapter folder (`dest`, or its single top-level folder when the archive
    wraps the files in one, as `tar czf x.tgz mydir/` does)."""
    total = 0
    entries = 0
    files = 0
    paths = _Paths()
    inflated = _BoundedGunzip(stream, limits.max_decompressed_bytes, limits)
    try:
        with tarfile.open(fileobj=inflated, mode="r|", tarinfo=_GuardedTarInfo) as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # stream mode keeps every TarInfo it has read otherwise
                entries += 1
                if entries > limits.max_files:
                    raise PayloadTooLarge(
                        f"the archive holds more than {limits.max_files} files or folders (adapters.max_files)"
                    )
                problem = _member_kind_error(member)
                if problem:
                    raise AdapterInvalid(f"archive member {_shown(member.name)} {problem}; only regular files are accepted")
                relative = _safe_member_path(member.name, folder=member.isdir())
                if relative.name.endswith(PICKLE_SUFFIXES):
                    raise AdapterInvalid(f"pickle weight files are refused (use safetensors): {_shown(member.name)}")
                paths.add(relative, member.name, folder=member.isdir())
                target = dest.joinpath(*relative.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                files += 1
                total += member.size
                if total > limits.max_unpacked_bytes:
                    raise _too_large(limits, f" (at member {_shown(member.name)})")
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_member(tar, member, target)
    except (tarfile.TarError, zlib.error, EOFError) as err:  # disk errors (OSError) propagate
        raise AdapterInvalid(f"the upload is not a valid tar.gz archive: {err}") from None
    if files == 0:
        raise AdapterInvalid("the archive holds no files")
    return _adapter_root(dest)


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    with target.open("xb") as out:
        remaining = member.size
        while remaining > 0:
            block = source.read(min(_CHUNK, remaining))
            if not block:
                raise AdapterInvalid(f"archive member {_shown(member.name)} is truncated")
            out.write(block)
            remaining -= len(block)


def _adapter_root(dest: Path) -> Path:
    if (dest / ADAPTER_CONFIG).exists():
        return dest
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / ADAPTER_CONFIG).exists():
        return entries[0]
    raise AdapterInvalid(f"the archive has no {ADAPTER_CONFIG} at its top level (or in a single top-level folder)")


def pack_folder(folder: Path) -> bytes:
    """A tar.gz of the regular files under `folder`, paths relative to it (what `push`
    sends; a client-side helper, so the archive is built in memory)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()


def iter_tar_gz(members: Iterable[tuple[str, int, Iterable[bytes]]], *, mtime: float = 0.0) -> Iterator[bytes]:
    """A tar.gz of `(relpath, size, chunks)` members, produced as compressed chunks while
    the members' chunks are read: memory stays at one chunk, whatever the sizes. A member
    whose chunks do not add up to `size` raises (the stream is then cut short, and a
    truncated gzip never unpacks)."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for relpath, size, chunks in members:
        info = tarfile.TarInfo(relpath)
        info.size = size
        info.mode = 0o644
        info.mtime = int(mtime)
        out = deflate.compress(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))
        if out:
            yield out
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > size:
                raise ValueError(f"{relpath} is larger than its declared {size} bytes")
            out = deflate.compress(chunk)
            if out:
                yield out
        if written != size:
            raise ValueError(f"{relpath} has {written} bytes, not its declared {size}")
        out = deflate.compress(b"\0" * (-size % BLOCK))
        if out:
            yield out
    yield deflate.compress(b"\0" * (2 * BLOCK)) + deflate.flush()
