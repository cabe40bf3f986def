"""Hostile adapter archives (tar.gz), built small, for the archive check and the live ingress.

Each probe is what a hostile tenant could upload as `POST /v1/adapters` `file=`: a few KB
to a few hundred KB of gzip that, unpacked naively, costs memory, disk, inodes or a 500.
The builders stream their tar bytes through one gzip compressor, so even a probe whose
tar is 24 MB never holds more than a block of it: reuse them from unit tests (the archive
check, `tests/unit/test_archive_hostile.py`) and from live-ingress tests alike.

`python -m tests.hostile_archives` measures every probe against `adapters.archive` (or
`--archive-module PATH`, e.g. an older archive.py from git) in one fresh subprocess per
probe, and prints compressed size, peak RSS growth, tracemalloc peak and the answer:
the numbers for the README's hostile-input table.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

BLOCK = tarfile.BLOCKSIZE
MB = 1024 * 1024

VALID_CONFIG = (
    b'{"peft_type": "LORA", "base_model_name_or_path": "x", "r": 8, "target_modules": ["q_proj"]}'
)


class _GzipWriter:
    """A gzip stream built chunk by chunk (the probe's tar is never held whole)."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(9, zlib.DEFLATED, 31)
        self._out = io.BytesIO()

    def write(self, data: bytes) -> None:
        self._out.write(self._z.compress(data))

    def repeat(self, byte: bytes, count: int, chunk: int = MB) -> None:
        block = byte * min(chunk, count)
        while count > 0:
            piece = block if count >= len(block) else block[:count]
            self.write(piece)
            count -= len(piece)

    def pad(self, size: int) -> None:
        self.repeat(b"\0", -size % BLOCK)

    def finish(self) -> bytes:
        self.write(b"\0" * (2 * BLOCK))  # end-of-archive marker
        self._out.write(self._z.flush())
        return self._out.getvalue()


def _header(name: str, *, type: bytes = tarfile.REGTYPE, size: int = 0, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = type
    info.size = size
    info.mode = 0o755 if type == tarfile.DIRTYPE else 0o644
    return info.tobuf(fmt, "utf-8", "surrogateescape")


def _file(out: _GzipWriter, name: str, data: bytes, fmt: int = tarfile.GNU_FORMAT) -> None:
    out.write(_header(name, size=len(data), fmt=fmt))
    out.write(data)
    out.pad(len(data))


def _config(out: _GzipWriter) -> None:
    _file(out, "adapter_config.json", VALID_CONFIG)


# ---------------------------------------------------------------------------- probes


def gnu_long_name(name_bytes: int = 24 * MB) -> bytes:
    """A GNU `././@LongLink` header declaring a `name_bytes` long name for the next member.
    CPython's tarfile reads such a header whole (`_proc_gnulong`) before anything can look
    at the name."""
    out = _GzipWriter()
    _config(out)
    out.write(_header("././@LongLink", type=tarfile.GNUTYPE_LONGNAME, size=name_bytes + 1))
    out.repeat(b"a", name_bytes)
    out.write(b"\0")
    out.pad(name_bytes + 1)
    out.write(_header("x", size=0))
    return out.finish()


def pax_long_path(path_bytes: int = 24 * MB) -> bytes:
    """A pax extended header whose `path` record is `path_bytes` long (`_proc_pax` reads it whole)."""
    out = _GzipWriter()
    _config(out)
    body_len = len(" path=\n") + path_bytes
    digits = len(str(body_len))
    while len(str(body_len + digits)) != digits:
        digits += 1
    record_len = body_len + digits
    out.write(_header("././@PaxHeader", type=tarfile.XHDTYPE, size=record_len))
    out.write(f"{record_len} path=".encode())
    out.repeat(b"a", path_bytes)
    out.write(b"\n")
    out.pad(record_len)
    out.write(_header("x", size=0))
    return out.finish()


def pax_header_chain(headers: int = 2000) -> bytes:
    """`headers` pax extended headers in a row before one member: tarfile recurses once per
    header (`_proc_pax` -> `fromtarfile`), so a long chain overflows the stack."""
    out = _GzipWriter()
    _config(out)
    record = b"20 comment=xxxxxxxx\n"
    for _ in range(headers):
        out.write(_header("././@PaxHeader", type=tarfile.XHDTYPE, size=len(record)))
        out.write(record)
        out.pad(len(record))
    out.write(_header("x", size=0))
    return out.finish()


def gnu_sparse_map(extension_blocks: int = 100_000) -> bytes:
    """A GNU sparse member whose sparse map continues over `extension_blocks` 512-byte
    blocks (21 entries each); tarfile collects the whole map in a list before returning
    the member."""
    out = _GzipWriter()
    _config(out)
    info = tarfile.TarInfo("sparse.dat")
    info.type = tarfile.GNUTYPE_SPARSE
    buf = bytearray(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
    buf[482] = 1  # isextended: an extension block follows
    buf[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
    buf[148:156] = b"%06o\0 " % sum(buf)
    out.write(bytes(buf))
    entry = b"%011o\0%011o\0" % (1, 1)
    block = entry * 21 + b"\1" + b"\0" * (BLOCK - 24 * 21 - 1)
    for i in range(extension_blocks):
        out.write(block if i < extension_blocks - 1 else entry * 21 + b"\0" * (BLOCK - 24 * 21))
    return out.finish()


def many_directories(count: int = 60_000) -> bytes:
    """A valid adapter plus `count` empty folders (~5 compressed bytes each)."""
    out = _GzipWriter()
    _config(out)
    for i in range(count):
        out.write(_header(f"d{i:06d}/", type=tarfile.DIRTYPE))
    return out.finish()


def long_component(length: int = 300) -> bytes:
    """A member whose file name is `length` bytes (over the filesystem's 255-byte NAME_MAX)."""
    out = _GzipWriter()
    _config(out)
    _file(out, "n" * length, b"x")
    return out.finish()


def long_path(depth: int = 600) -> bytes:
    """A member `depth` folders deep (`a/a/a/.../x`, 2 bytes per level)."""
    out = _GzipWriter()
    _config(out)
    _file(out, "a/" * depth + "x", b"x")
    return out.finish()


def file_then_folder() -> bytes:
    """`extra` as a file, then `extra/` as a folder of the same path."""
    out = _GzipWriter()
    _config(out)
    _file(out, "extra", b"x")
    out.write(_header("extra/", type=tarfile.DIRTYPE))
    return out.finish()


def file_under_a_file() -> bytes:
    """`extra` as a file, then `extra/inner` (a file inside a file)."""
    out = _GzipWriter()
    _config(out)
    _file(out, "extra", b"x")
    _file(out, "extra/inner", b"y")
    return out.finish()


def case_collision() -> bytes:
    """`adapter_config.json` and `ADAPTER_CONFIG.json`: one file on a case-insensitive disk."""
    out = _GzipWriter()
    _config(out)
    _file(out, "ADAPTER_CONFIG.json", b'{"peft_type": "PREFIX_TUNING"}')
    return out.finish()


def unicode_normalisation_collision() -> bytes:
    """`café.txt` composed (NFC) and decomposed (NFD): the same name after normalisation."""
    out = _GzipWriter()
    _config(out)
    _file(out, "caf\u00e9.txt", b"x", fmt=tarfile.PAX_FORMAT)
    _file(out, "cafe\u0301.txt", b"y", fmt=tarfile.PAX_FORMAT)
    return out.finish()


def declared_size_bomb(size: int = 64 * 1024**3) -> bytes:
    """A member declaring `size` bytes (the classic bomb; refused from its header)."""
    out = _GzipWriter()
    _config(out)
    out.write(_header("weights.dat", size=size))
    out.repeat(b"\0", MB)
    return out.finish()


def zeros_between_members(zero_bytes: int = 512 * MB) -> bytes:
    """A regular member whose data is `zero_bytes` of zeros: small gzip, large unpacked."""
    out = _GzipWriter()
    _config(out)
    out.write(_header("zeros.dat", size=zero_bytes))
    out.repeat(b"\0", zero_bytes)
    out.pad(zero_bytes)
    return out.finish()


@dataclass(frozen=True)
class Probe:
    name: str
    build: Callable[[], bytes]
    what: str
    # What the archive check must answer now: the error type's name and a phrase of its message.
    expect: str
    phrase: str


PROBES: tuple[Probe, ...] = (
    Probe("gnu-long-name-24MB", gnu_long_name, "GNU long-name header holding a 24 MB name", "AdapterInvalid", "name"),
    Probe("pax-path-24MB", pax_long_path, "pax header holding a 24 MB path", "AdapterInvalid", "extended header"),
    Probe("pax-header-chain", pax_header_chain, "2,000 pax headers before one member", "AdapterInvalid", "extended headers"),
    Probe("gnu-sparse-map", gnu_sparse_map, "GNU sparse member with a 100,000-block sparse map", "AdapterInvalid", "sparse"),
    Probe("60k-directories", many_directories, "60,000 folder entries", "PayloadTooLarge", "files or folders"),
    Probe("name-300-bytes", long_component, "a 300-byte file name", "AdapterInvalid", "255 bytes"),
    Probe("path-1201-bytes", long_path, "a member 600 folders deep (1,201-byte path)", "AdapterInvalid", "1024 bytes"),
    Probe("file-then-folder", file_then_folder, "a file and a folder of the same path", "AdapterInvalid", "collides"),
    Probe("file-under-file", file_under_a_file, "a file inside a path that is a file", "AdapterInvalid", "collides"),
    Probe("case-collision", case_collision, "two names equal but for case", "AdapterInvalid", "collides"),
    Probe("nfc-nfd-collision", unicode_normalisation_collision, "two names equal after Unicode normalisation",
          "AdapterInvalid", "collides"),
    Probe("declared-64GiB", declared_size_bomb, "a member declaring 64 GiB", "PayloadTooLarge", "unpacks to more than"),
    Probe("zeros-512MB", zeros_between_members, "512 MB of zeros in one member", "PayloadTooLarge", "unpacks to more than"),
)


# The "~200 KB upload, ~800 MB of memory" case: measured by the driver, left out
# of the unit tests (building it takes seconds; the 24 MB probe exercises the same check).
LARGE_PROBES: tuple[Probe, ...] = (
    Probe("gnu-long-name-200MB", lambda: gnu_long_name(200 * MB), "GNU long-name header holding a 200 MB name",
          "AdapterInvalid", "name"),
)


def probe(name: str) -> Probe:
    return next(p for p in PROBES + LARGE_PROBES if p.name == name)


def iter_probe_names() -> Iterator[str]:
    return (p.name for p in PROBES + LARGE_PROBES)


# ----------------------------------------------------------------------- measurement

# Limits the probes are measured under: the config defaults (adapters.max_unpacked_bytes,
# adapters.max_files) except a smaller unpacked cap, so the zeros probe is refused quickly.
MEASURE_UNPACKED = 256 * MB
MEASURE_FILES = 64

_CHILD = r"""
import gc, importlib.util, io, json, resource, sys, tempfile, time, tracemalloc
from pathlib import Path
sys.setrecursionlimit(1000)
from tests.hostile_archives import probe, MEASURE_UNPACKED, MEASURE_FILES
archive_path, name = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("archive_under_test", archive_path)
mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
data = probe(name).build()
gc.collect()
def rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base = rss_kb()
tracemalloc.start()
started = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    try:
        mod.extract_adapter_archive(io.BytesIO(data), Path(tmp), mod.ArchiveLimits(max_unpacked_bytes=MEASURE_UNPACKED, max_files=MEASURE_FILES))
        answer = "accepted"
    except BaseException as err:
        answer = f"{type(err).__name__}: {str(err)[:90]}"
elapsed = time.perf_counter() - started
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"compressed": len(data), "rss_growth_mb": (rss_kb() - base) / 1024, "traced_peak_mb": peak / 2**20,
                  "seconds": elapsed, "answer": answer}))
"""


def measure(archive_module: str, names: list[str]) -> list[dict]:
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    rows = []
    for name in names:
        done = subprocess.run([sys.executable, "-c", _CHILD, archive_module, name], cwd=repo, capture_output=True,
                              text=True, timeout=1200)
        if done.returncode != 0:
            rows.append({"probe": name, "answer": f"process died ({done.returncode}): {done.stderr.strip()[-200:]}"})
            continue
        rows.append({"probe": name, **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive-module", default=str(Path(__file__).resolve().parents[1] / "adapters" / "archive.py"),
                        help="the archive.py to measure (default: this checkout's)")
    parser.add_argument("--probe", action="append", help="measure only these probes (default: all)")
    args = parser.parse_args(argv)
    rows = measure(args.archive_module, args.probe or list(iter_probe_names()))
    print("| probe | compressed | peak RSS growth | tracemalloc peak | time | answer |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "compressed" not in r:
            print(f"| {r['probe']} | | | | | {r['answer']} |")
            continue
        print(f"| {r['probe']} | {r['compressed'] / 1024:.0f} KB | {r['rss_growth_mb']:.0f} MB | {r['traced_peak_mb']:.1f} MB "
              f"| {r['seconds']:.2f} s | {r['answer']} |")


if __name__ == "__main__":
    main()
