"""The S3-compatible backend: `s3://bucket/prefix/<name>/<version>/{files/..., manifest.json}`.

S3 has no rename, so atomicity comes from ordering and conditional writes:
1. claim the version with a conditional PUT of `<version>/.claim` (`If-None-Match: *`):
   of two concurrent uploads of one version exactly one wins, the other gets 409
   (or, with no explicit version, takes the next number);
2. upload the files;
3. upload the manifest last. Listing shows only versions with a manifest, so a crash
   during 2 leaves an invisible claimed version (its number is not reused).

Credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
env vars, a profile, an instance role), never from lorafleet's config, so they never
appear in a config dump or a log line. The listing is cached for `refresh_s` seconds:
a new adapter is seen by every replica within that time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from adapters.errors import AdapterExists
from adapters.manifest import MANIFEST_NAME, VERSION_PATTERN
from adapters.validation import ADAPTER_NAME_PATTERN

FILES_DIR = "files"
CLAIM = ".claim"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/") (prefix "" for the bucket root)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI {uri!r} has no bucket")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def make_s3_client(endpoint_url: str | None = None, region: str | None = None):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=region,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
    )


class S3Backend:
    def __init__(self, uri: str, *, endpoint_url: str | None = None, region: str | None = None, refresh_s: float = 2.0, client=None):
        self.uri = uri
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.client = client or make_s3_client(endpoint_url, region)
        self.refresh_s = refresh_s
        self._index: tuple[float, dict[str, dict[str, object]], dict[str, set[str]]] | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.uri

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _list(self) -> tuple[dict[str, dict[str, object]], dict[str, set[str]]]:
        """One paginated listing -> (committed versions with their manifest ETag, claimed versions)."""
        committed: dict[str, dict[str, object]] = {}
        claimed: dict[str, set[str]] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(self.prefix):].split("/")
                if len(parts) < 3 or not ADAPTER_NAME_PATTERN.fullmatch(parts[0]) or not VERSION_PATTERN.fullmatch(parts[1]):
                    continue
                name, version = parts[0], parts[1]
                claimed.setdefault(name, set()).add(version)
                if len(parts) == 3 and parts[2] == MANIFEST_NAME:
                    committed.setdefault(name, {})[version] = obj["ETag"]
        return committed, claimed

    def _current(self, fresh: bool = False):
        with self._lock:
            if fresh or self._index is None or time.monotonic() - self._index[0] > self.refresh_s:
                committed, claimed = self._list()
                self._index = (time.monotonic(), committed, claimed)
            return self._index[1], self._index[2]

    def invalidate(self) -> None:
        with self._lock:
            self._index = None

    def names(self) -> list[str]:
        return sorted(self._current()[0])

    def versions(self, name: str) -> dict[str, object]:
        return dict(self._current()[0].get(name, {}))

    def claimed_versions(self, name: str) -> set[str]:
        return set(self._current(fresh=True)[1].get(name, set()))

    def _get(self, key: str, max_bytes: int | None = None) -> bytes:
        from botocore.exceptions import ClientError

        try:
            kwargs = {"Range": f"bytes=0-{max_bytes}"} if max_bytes is not None else {}
            return self.client.get_object(Bucket=self.bucket, Key=key, **kwargs)["Body"].read()
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            if code == "InvalidRange":  # a Range on an empty object: it exists and is empty
                return b""
            raise

    def read_manifest(self, name: str, version: str) -> bytes:
        return self._get(self._key(name, version, MANIFEST_NAME))

    def read_file(self, name: str, version: str, relpath: str, max_bytes: int) -> bytes:
        return self._get(self._key(name, version, FILES_DIR, relpath), max_bytes=max_bytes)

    def commit(self, name: str, version: str, folder: Path, files: dict[str, dict], manifest: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name, version, CLAIM), Body=b"", IfNoneMatch="*")
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise AdapterExists(f"adapter `{name}@{version}` already exists", param="version") from None
            raise
        try:
            for relpath in files:
                self.client.upload_file(str(folder / relpath), self.bucket, self._key(name, version, FILES_DIR, relpath))
            self._put_manifest(name, version, manifest)  # last: the version is complete from here on
        finally:
            self.invalidate()

    def _put_manifest(self, name: str, version: str, manifest: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name, version, MANIFEST_NAME), Body=manifest,
                               ContentType="application/json")

    def delete(self, name: str, version: str) -> bool:
        manifest_key = self._key(name, version, MANIFEST_NAME)
        try:
            self.client.head_object(Bucket=self.bucket, Key=manifest_key)
        except Exception:  # noqa: BLE001 - absent (or unreadable): nothing to delete
            return False
        self.client.delete_object(Bucket=self.bucket, Key=manifest_key)  # invisible from here on
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(name, version, FILES_DIR) + "/"):
            keys += [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start:start + 1000], "Quiet": True})
        # The claim stays: a deleted version's number is never handed out again, so a
        # replica can never confuse old weights with new ones under the same id.
        self.invalidate()
        return True

    def flat_folder(self, name: str) -> Path | None:
        return None  # the flat layout exists only in local directories

    def delete_flat(self, name: str) -> bool:
        return False

    def location(self, name: str, version: str) -> str:
        return f"s3://{self.bucket}/{self._key(name, version, FILES_DIR)}"
