"""The archive check against hostile uploads: every probe in tests/hostile_archives.py is
refused with a typed error (400/413, never an OSError or RecursionError that the API
would answer with 500), and refusing it costs bounded memory.

Before this check was hardened (commit a6d3626), a 24 KB archive whose GNU long-name
header declared a 24 MB name cost ~96 MB of traced memory and ended in OSError, a 174 KB
sparse map cost ~130 MB and 26 s, 60,000 folders were accepted, and name collisions were
accepted or answered with FileExistsError: see `python -m tests.hostile_archives`.
"""

from __future__ import annotations

import gzip
import io
import random
import tarfile
import tracemalloc

import pytest

from adapters.archive import (
    MAX_NAME_BYTES,
    ArchiveLimits,
    _BoundedGunzip,
    extract_adapter_archive,
    iter_tar_gz,
    pack_folder,
)
from adapters.errors import AdapterInvalid, PayloadTooLarge
from tests import hostile_archives
from tests.hostile_archives import MB, PROBES, VALID_CONFIG

LIMITS = ArchiveLimits(max_unpacked_bytes=256 * MB, max_files=64)
# What refusing any probe may cost in traced Python memory. The old code needed ~96 MB
# for the 24 MB name and ~130 MB for the sparse map; the new one stays under 1 MB.
MEMORY_BOUND = 4 * MB

ERRORS = {"AdapterInvalid": AdapterInvalid, "PayloadTooLarge": PayloadTooLarge}


@pytest.fixture(scope="module")
def built():
    return {p.name: p.build() for p in PROBES}


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_hostile_archive_is_refused_with_a_typed_error_in_bounded_memory_when_uploaded(probe, built, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    data = built[probe.name]
    tracemalloc.start()
    try:
        with pytest.raises(ERRORS[probe.expect]) as err:
            extract_adapter_archive(io.BytesIO(data), dest, LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert probe.phrase in err.value.message
    assert len(err.value.message) < 400  # a 24 MB name is never echoed back
    assert peak < MEMORY_BOUND, f"{probe.name}: refusing a {len(data)}-byte upload traced {peak / MB:.1f} MB"
    assert len(list(dest.iterdir())) <= LIMITS.max_files  # stopped at the limit


def test_every_folder_counts_against_max_files_when_the_archive_has_only_folders(tmp_path):
    data = hostile_archives.many_directories(count=9)
    with pytest.raises(PayloadTooLarge, match="more than 8 files or folders"):
        extract_adapter_archive(io.BytesIO(data), tmp_path, ArchiveLimits(max_unpacked_bytes=MB, max_files=8))


def test_decompressed_bytes_are_bounded_as_they_stream_when_the_gzip_inflates_hugely():
    """The bound holds for any byte of the tar (data, headers, padding): 64 MB of zeros
    gzip to 64 KB; reading them through the guard stops just past the limit."""
    raw = io.BytesIO(gzip.compress(b"\0" * (64 * MB), compresslevel=9))
    guard = _BoundedGunzip(raw, limit=MB, limits=LIMITS)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge, match="unpacks to more than"):
            while guard.read(tarfile.RECORDSIZE):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert MB < guard.total <= MB + tarfile.RECORDSIZE
    assert peak < MB


def test_decompressor_never_returns_more_than_asked_when_input_is_highly_compressible():
    guard = _BoundedGunzip(io.BytesIO(gzip.compress(b"\0" * (4 * MB))), limit=8 * MB, limits=LIMITS)
    sizes = []
    while chunk := guard.read(1000):
        sizes.append(len(chunk))
    assert max(sizes) <= 1000 and sum(sizes) == 4 * MB


def test_concatenated_gzip_members_read_as_one_archive(tmp_path, demo_assets):
    """gzip(1) and Python's gzip module accept multi-member streams; so does the check."""
    packed = gzip.decompress(pack_folder(demo_assets / "adapters" / "haiku"))
    half = len(packed) // 2
    data = gzip.compress(packed[:half]) + gzip.compress(packed[half:])
    root = extract_adapter_archive(io.BytesIO(data), tmp_path, LIMITS)
    assert (root / "adapter_config.json").is_file()


def test_truncated_upload_is_refused_as_not_a_tar_gz(tmp_path, demo_assets):
    data = pack_folder(demo_assets / "adapters" / "haiku")
    with pytest.raises(AdapterInvalid, match="not a valid tar.gz"):
        extract_adapter_archive(io.BytesIO(data[: len(data) // 2]), tmp_path, LIMITS)


def _tar_gz(build) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", type: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = type
    info.size = len(data) if type == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if type == tarfile.REGTYPE else None)


def test_real_tool_layouts_are_accepted_when_names_are_sane(tmp_path):
    """`tar czf x.tgz -C dir .` (a `./` entry first), a wrapping folder, a git-archive
    style global pax header and a long (but sane) PAX path all unpack."""

    def build(tar):
        tar.pax_headers = {"comment": "a" * 40}  # a global header, as git archive writes
        _add(tar, "./", type=tarfile.DIRTYPE)
        _add(tar, "./adapter_config.json", VALID_CONFIG)
        _add(tar, "./sub/", type=tarfile.DIRTYPE)
        _add(tar, "./sub/" + "n" * 200 + "/" + "m" * 200 + ".txt", b"long but fine")

    root = extract_adapter_archive(io.BytesIO(_tar_gz(build)), tmp_path, LIMITS)
    assert root == tmp_path and (root / "adapter_config.json").read_bytes() == VALID_CONFIG
    assert (root / "sub" / ("n" * 200) / ("m" * 200 + ".txt")).read_bytes() == b"long but fine"


@pytest.mark.parametrize(
    "names, phrase",
    [
        (["extra/", "extra/", "extra/x"], None),  # a folder listed twice is harmless
        (["Sub/a", "sub/b"], None),  # two files in one folder spelled two ways: one folder on any disk
        (["a.txt", "A.TXT"], "collides"),
        (["dir/", "DIR"], "collides"),
        (["x\u212a", "xk"], "collides"),  # KELVIN SIGN folds to k
        (["tab\there"], "control character"),
        (["n" * 256], "longer than 255 bytes"),
        (["a/" * (MAX_NAME_BYTES // 2) + "x"], f"limited to {MAX_NAME_BYTES} bytes"),
    ],
)
def test_member_names_are_checked_as_every_filesystem_would_store_them(tmp_path, names, phrase):
    def build(tar):
        _add(tar, "adapter_config.json", VALID_CONFIG)
        for name in names:
            _add(tar, name.rstrip("/"), type=tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE)

    data = _tar_gz(build)
    if phrase is None:
        extract_adapter_archive(io.BytesIO(data), tmp_path, LIMITS)
        return
    with pytest.raises(AdapterInvalid, match=phrase):
        extract_adapter_archive(io.BytesIO(data), tmp_path, LIMITS)


def test_streamed_archive_round_trips_and_is_produced_in_pieces(tmp_path):
    big = random.Random(0).randbytes(2 * MB)
    members = [("adapter_config.json", len(VALID_CONFIG), [VALID_CONFIG]),
               ("weights/w.dat", len(big), (big[i:i + 65536] for i in range(0, len(big), 65536)))]
    chunks = list(iter_tar_gz(members))
    assert len(chunks) > 2
    root = extract_adapter_archive(io.BytesIO(b"".join(chunks)), tmp_path, LIMITS)
    assert (root / "weights" / "w.dat").read_bytes() == big


def test_streamed_archive_stops_when_a_member_is_not_its_declared_size():
    with pytest.raises(ValueError, match="declared"):
        list(iter_tar_gz([("a", 10, [b"12345"])]))
