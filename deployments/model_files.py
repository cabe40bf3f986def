"""A base model's files on this node: fetched once per node from S3 or a model hub.

GPU users keep weights in object storage or a hub, not on every node's disk. An engine
replica whose base is an `s3://bucket/prefix` or a hub id gets a local folder before
vLLM starts (vLLM then loads from the node's disk, and the ingress's tokenizer reads
the same copy):

- **S3** (boto3's credential chain: environment, profile, instance role; never the
  config): the objects under the prefix are listed; the copy's folder is named by the
  source and a digest of that listing (keys, sizes, ETags), so a changed model is a new
  folder and a stale copy is never served. Under an exclusive `flock` per folder (one
  download per node however many replicas start at once; the others wait and reuse
  it), the files are downloaded into a staging folder, each checked against its
  listed size (and its MD5 where the ETag is one), a completion record is written
  last, and the folder is renamed into place: a folder without its record is never
  used, so an interrupted download is redone, never half-used.
- **Hub ids**: `huggingface_hub.snapshot_download` into `<cache>/hub` (it reads
  `HF_TOKEN` from the environment, locks each file, downloads to `.incomplete` and
  renames: the same guarantees), then the same completeness check. The repo's info is
  asked for first with a bounded wait (`HUB_ANSWER_TIMEOUT_S`): huggingface_hub sends
  that request without a timeout, and a hub that never answers would hang the start;
  without an answer a complete copy fetched earlier still serves.

Only safetensors weights are fetched (lorafleet never unpickles: `.bin`/`.pt` weights
and a hub repo's `original/` checkpoints are skipped), and a source without them is
refused. The ingress asks for the copy without weights (`weights=False`): the full copy
if one is on its node, else just the small files a tokenizer reads. A wrong or
unreachable source raises ModelUnavailable naming it, which fails the replica's start.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from deployments.config import ModelConfig
from deployments.errors import ModelUnavailable

logger = logging.getLogger(__name__)

COMPLETE = ".lorafleet-complete.json"
WEIGHTS = ("*.safetensors",)
# Never fetched: pickled checkpoints (lorafleet never unpickles) and other formats vLLM
# would not load from a safetensors model folder.
SKIPPED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.gguf", "*.h5", "*.msgpack", "*.onnx",
           "original/*", ".*", "*/.*")
CHUNK = 1 << 20
HUB_ANSWER_TIMEOUT_S = 30.0  # a hub that has not answered a repo's info by then is down for us


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "lorafleet-model-cache"


def is_remote(source: str) -> bool:
    """S3 or a hub id (anything that is not a folder here)."""
    return source.startswith("s3://") or not Path(source).is_dir()


def local_model_path(model: ModelConfig, cache_dir: str | Path | None = None, *, weights: bool = True) -> str:
    """A local folder holding `model`: its source itself when that is a folder, else a
    verified node-local copy (fetched now if this node has none). `weights=False`: the
    files a tokenizer needs, without fetching weights."""
    source = model.source
    if not is_remote(source):
        return source
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if source.startswith("s3://"):
        return str(_S3Fetch(model, cache).local(weights))
    return str(_hub_fetch(source, cache, weights))


def _wanted(relpath: str, weights: bool) -> bool:
    if any(fnmatch.fnmatch(relpath, p) for p in SKIPPED):
        return False
    return weights or not any(fnmatch.fnmatch(relpath, p) for p in WEIGHTS)


def _check_model_folder(folder: Path, source: str, weights: bool) -> None:
    if not (folder / "config.json").is_file():
        raise ModelUnavailable(f"the base model {source} has no config.json: not a Hugging Face model folder")
    if weights and not any(folder.rglob("*.safetensors")):
        raise ModelUnavailable(f"the base model {source} has no safetensors weights (lorafleet loads safetensors only)")


@contextmanager
def _exclusive(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _S3Fetch:
    def __init__(self, model: ModelConfig, cache: Path):
        from adapters.store_s3 import make_s3_client, parse_s3_uri

        self.source = model.source
        try:
            self.bucket, self.prefix = parse_s3_uri(model.source)
        except ValueError as err:
            raise ModelUnavailable(f"the base model source {model.source!r} is not a valid s3:// URI: {err}") from None
        self.client = make_s3_client(model.s3_endpoint_url, model.s3_region)
        self.cache = cache / "s3"
        self.key = hashlib.sha256(f"{model.s3_endpoint_url or ''}|{model.source}".encode()).hexdigest()[:16]

    def _listing(self) -> dict[str, tuple[int, str]]:
        """relpath -> (size, ETag) of every object under the prefix."""
        objects: dict[str, tuple[int, str]] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    relpath = obj["Key"][len(self.prefix):]
                    if relpath and not relpath.endswith("/") and ".." not in relpath.split("/"):
                        objects[relpath] = (obj["Size"], obj.get("ETag", "").strip('"'))
        except Exception as err:  # noqa: BLE001 - botocore's errors (no bucket, denied, unreachable): say which source
            raise ModelUnavailable(f"cannot list the base model {self.source}: {type(err).__name__}: {err}") from None
        if not objects:
            raise ModelUnavailable(f"the base model {self.source} is empty or does not exist (no objects under it)")
        return objects

    def local(self, weights: bool) -> Path:
        listing = self._listing()
        digest = hashlib.sha256(json.dumps(sorted((k, *v) for k, v in listing.items())).encode()).hexdigest()[:16]
        full = self.cache / f"{self.key}-{digest}"
        if (full / COMPLETE).is_file():
            return full
        target = full if weights else full.with_name(full.name + ".meta")
        if (target / COMPLETE).is_file():
            return target
        with _exclusive(target.with_name(target.name + ".lock")):
            if (target / COMPLETE).is_file():  # another replica on this node fetched it while we waited
                return target
            self._fetch({k: v for k, v in listing.items() if _wanted(k, weights)}, target, weights)
        return target

    def _fetch(self, files: dict[str, tuple[int, str]], target: Path, weights: bool) -> None:
        for stale in target.parent.glob(target.name + ".partial-*"):  # left by a process that died mid-download
            shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)  # no completion record: never used
        staging = target.with_name(f"{target.name}.partial-{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        logger.info("fetching the base model %s (%d files, %.1f MB) into %s", self.source, len(files),
                    sum(size for size, _ in files.values()) / 1e6, target)
        try:
            for relpath, (size, etag) in sorted(files.items()):
                path = staging / relpath
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.client.download_file(self.bucket, self.prefix + relpath, str(path))
                except Exception as err:  # noqa: BLE001
                    raise ModelUnavailable(f"cannot download {relpath} of the base model {self.source}: "
                                           f"{type(err).__name__}: {err}") from None
                _verify(path, size, etag, f"{self.source}{relpath}")
            _check_model_folder(staging, self.source, weights)
            (staging / COMPLETE).write_text(json.dumps(
                {"source": self.source, "files": {k: v[0] for k, v in files.items()}}, sort_keys=True))
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("base model %s is on this node at %s", self.source, target)


def _verify(path: Path, size: int, etag: str, what: str) -> None:
    """The listed size, and the MD5 where the ETag is one (a single-part upload's ETag;
    a multipart ETag is `<md5 of md5s>-<parts>`, checked by size only)."""
    if path.stat().st_size != size:
        raise ModelUnavailable(f"{what} arrived with {path.stat().st_size} bytes, the store lists {size}")
    if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag):
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
        if digest.hexdigest() != etag:
            raise ModelUnavailable(f"{what} does not match its ETag (MD5) in the store: corrupted in transit")


def _hub_fetch(repo_id: str, cache: Path, weights: bool) -> Path:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    ignore = list(SKIPPED) + ([] if weights else list(WEIGHTS))
    fetch = dict(cache_dir=str(cache / "hub"), ignore_patterns=ignore)
    try:
        try:
            # snapshot_download's first request (the repo's info) is sent without a
            # timeout, so a hub that accepts the connection and never answers would hang
            # the replica's start for ever; ask for the same info first, bounded.
            HfApi().model_info(repo_id, revision="main", timeout=HUB_ANSWER_TIMEOUT_S)
        except HfHubHTTPError:
            raise  # the hub answered: 401, 404 ... is the answer
        except Exception as no_answer:  # noqa: BLE001 - no answer: a complete copy fetched earlier still serves
            try:
                folder = Path(snapshot_download(repo_id, local_files_only=True, **fetch))
            except Exception:  # noqa: BLE001 - none: the hub's silence is the error to report
                raise no_answer from None
        else:
            folder = Path(snapshot_download(repo_id, **fetch))
    except Exception as err:  # noqa: BLE001 - hub errors (offline, 401, 404, no answer): say which source
        raise ModelUnavailable(f"cannot fetch the base model {repo_id!r} from the hub (not a local folder or s3:// "
                               f"URI, so read as a hub id; HF_TOKEN from the environment; the hub must answer "
                               f"within {HUB_ANSWER_TIMEOUT_S:g} s): {type(err).__name__}: {err}") from None
    _check_model_folder(folder, repo_id, weights)
    return folder
