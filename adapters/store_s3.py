"""The S3-compatible backend: `s3://bucket/prefix/<name>/<version>/{files/..., manifest.json}`.

S3 has no rename, so atomicity comes from ordering and conditional writes:
1. claim the version with a conditional PUT of `<version>/.claim` (`If-None-Match: *`):
   of two concurrent uploads of one version exactly one wins, the other gets 409
   (or, with no explicit version, takes the next number);
2. upload the files;
3. upload the manifest last. Listing shows only versions with a manifest, so a crash
   during 2 leaves an invisible claimed version (its number is not reused), and a
   deleted version keeps its claim for the same reason.

Beside the adapters (keys starting with `.` are never adapter names): `.names/<name>.json`
is the name's ownership claim, also a conditional PUT (of two tenants racing for a new
name exactly one wins); `.owners/<tenant key>/<name>` indexes the names a tenant owns;
`.reservations/<tenant key>/<token>.json` holds uploads in flight (quota).

Credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
env vars, a profile, an instance role), never from lorafleet's config, so they never
appear in a config dump or a log line. The bucket listing is cached for `refresh_s`
seconds (a new adapter is seen by every replica within that time) and is never taken
under a lock: callers that need a new listing while one is in flight share it
(`_Listing`), so a slow S3 holds up nobody but the callers that need its answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import AdapterExists
from adapters.manifest import MANIFEST_NAME, VERSION_PATTERN
from adapters.validation import ADAPTER_NAME_PATTERN

FILES_DIR = "files"
CLAIM = ".claim"
NAMES_DIR = ".names"
OWNERS_DIR = ".owners"
RESERVATIONS_DIR = ".reservations"
CHUNK = 1 << 20
_CONFLICT_CODES = ("PreconditionFailed", "ConditionalRequestConflict")


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


def _code(err) -> str | None:
    return err.response.get("Error", {}).get("Code")


@dataclass
class _Listing:
    """One listing of the bucket, in flight or done; every caller waiting for it shares it."""

    started: float
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[dict, dict] | None = None
    error: BaseException | None = None

    def wait(self) -> tuple[dict, dict]:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class S3Backend:
    def __init__(self, uri: str, *, endpoint_url: str | None = None, region: str | None = None, refresh_s: float = 2.0, client=None):
        self.uri = uri
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.client = client or make_s3_client(endpoint_url, region)
        self.refresh_s = refresh_s
        self._index: tuple[float, dict[str, dict[str, object]], dict[str, set[str]]] | None = None
        self._in_flight: _Listing | None = None
        self._stale_before = float("-inf")  # listings started before this may miss a write we made
        self._lock = threading.Lock()  # guards the fields above only; never held across a network call
        self.listings = 0  # listings made by this process (observability and tests)

    def describe(self) -> str:
        return self.uri

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _list(self) -> tuple[dict[str, dict[str, object]], dict[str, set[str]]]:
        """One paginated listing -> (committed versions with their manifest ETag, claimed versions)."""
        committed: dict[str, dict[str, object]] = {}
        claimed: dict[str, set[str]] = {}
        self.listings += 1
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

    def _current(self) -> tuple[dict[str, dict[str, object]], dict[str, set[str]]]:
        """The cached listing if fresh, else a new one: joined if one started after the
        cache went stale is in flight, else started here. The lock is held only to read
        and swap these fields, never across the network call."""
        now = time.monotonic()
        with self._lock:
            index = self._index
            if index is not None and now - index[0] <= self.refresh_s and index[0] >= self._stale_before:
                return index[1], index[2]
            flight = self._in_flight
            leader = flight is None or flight.started < self._stale_before
            if leader:
                flight = self._in_flight = _Listing(started=now)
        if not leader:
            return flight.wait()
        try:
            flight.result = self._list()
        except BaseException as err:
            flight.error = err
            raise
        finally:
            with self._lock:
                if self._in_flight is flight:
                    self._in_flight = None
                if (flight.result is not None and flight.started >= self._stale_before
                        and (self._index is None or self._index[0] <= flight.started)):
                    self._index = (flight.started, *flight.result)
            flight.done.set()
        return flight.result

    def refresh(self) -> None:
        """The next read lists the bucket anew (a listing already in flight is not reused):
        after our own write, and before a quota check that must see every version."""
        with self._lock:
            self._stale_before = time.monotonic()
            self._index = None

    invalidate = refresh

    def names(self) -> list[str]:
        return sorted(self._current()[0])

    def versions(self, name: str) -> dict[str, object]:
        return dict(self._current()[0].get(name, {}))

    def claimed_versions(self, name: str) -> set[str]:
        """Every version number under `name/`, committed or not: a listing of that prefix
        alone (fresh, and cheap however big the bucket is)."""
        found = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(name) + "/", Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                version = common["Prefix"][len(self._key(name)) + 1:].rstrip("/")
                if VERSION_PATTERN.fullmatch(version):
                    found.add(version)
        return found

    def _get(self, key: str, max_bytes: int | None = None) -> bytes:
        from botocore.exceptions import ClientError

        try:
            kwargs = {"Range": f"bytes=0-{max_bytes}"} if max_bytes is not None else {}
            return self.client.get_object(Bucket=self.bucket, Key=key, **kwargs)["Body"].read()
        except ClientError as err:
            code = _code(err)
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            if code == "InvalidRange":  # a Range on an empty object: it exists and is empty
                return b""
            raise

    def read_manifest(self, name: str, version: str) -> bytes:
        return self._get(self._key(name, version, MANIFEST_NAME), max_bytes=16 * 1024 * 1024)

    def iter_file(self, name: str, version: str, relpath: str, max_bytes: int, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The object's bytes in chunks as they arrive (one ranged GET of at most
        `max_bytes + 1` bytes); FileNotFoundError if missing."""
        from botocore.exceptions import ClientError

        key = self._key(name, version, FILES_DIR, relpath)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{max_bytes}")["Body"]
        except ClientError as err:
            code = _code(err)
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            if code == "InvalidRange":
                return
            raise
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def commit(self, name: str, version: str, folder: Path, files: dict[str, dict], manifest: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name, version, CLAIM), Body=b"", IfNoneMatch="*")
        except ClientError as err:
            if _code(err) in _CONFLICT_CODES:
                raise AdapterExists(f"adapter `{name}@{version}` already exists", param="version") from None
            raise
        try:
            for relpath in files:
                self.client.upload_file(str(folder / relpath), self.bucket, self._key(name, version, FILES_DIR, relpath))
            self._put_manifest(name, version, manifest)  # last: the version is complete from here on
        finally:
            self.refresh()

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
        self._delete_prefix(self._key(name, version, FILES_DIR) + "/")
        # The claim stays: a deleted version's number is never handed out again, so a
        # replica can never confuse old weights with new ones under the same id.
        self.refresh()
        return True

    def _delete_prefix(self, prefix: str) -> None:
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start:start + 1000], "Quiet": True})

    def flat_folder(self, name: str) -> Path | None:
        return None  # the flat layout exists only in local directories

    def delete_flat(self, name: str) -> bool:
        return False

    def location(self, name: str, version: str) -> str:
        return f"s3://{self.bucket}/{self._key(name, version, FILES_DIR)}"

    # ------------------------------------------------------------ name ownership

    def create_name_claim(self, name: str, record: bytes, owner_key: str | None) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(NAMES_DIR, f"{name}.json"), Body=record,
                                   IfNoneMatch="*", ContentType="application/json")
        except ClientError as err:
            if _code(err) not in _CONFLICT_CODES:
                raise
            existing = self.read_name_claim(name)
            return existing if existing is not None else self.create_name_claim(name, record, owner_key)
        if owner_key is not None:
            self.client.put_object(Bucket=self.bucket, Key=self._key(OWNERS_DIR, owner_key, name), Body=b"")
        return None

    def read_name_claim(self, name: str) -> bytes | None:
        try:
            return self._get(self._key(NAMES_DIR, f"{name}.json"), max_bytes=64 * 1024)
        except FileNotFoundError:
            return None

    def delete_name_claim(self, name: str, owner_key: str | None) -> bool:
        if self.read_name_claim(name) is None:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self._key(NAMES_DIR, f"{name}.json"))
        if owner_key is not None:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(OWNERS_DIR, owner_key, name))
        return True

    def owned_names(self, owner_key: str) -> set[str]:
        prefix = self._key(OWNERS_DIR, owner_key) + "/"
        found = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found |= {obj["Key"][len(prefix):] for obj in page.get("Contents", [])}
        return found

    # ------------------------------------------------------------- reservations

    def add_reservation(self, owner_key: str, token: str, record: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(RESERVATIONS_DIR, owner_key, f"{token}.json"), Body=record)

    def reservations(self, owner_key: str) -> list[tuple[str, bytes, float]]:
        prefix = self._key(RESERVATIONS_DIR, owner_key) + "/"
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                token = obj["Key"][len(prefix):].removesuffix(".json")
                try:
                    record = self._get(obj["Key"], max_bytes=64 * 1024)
                except FileNotFoundError:
                    continue  # released meanwhile
                found.append((token, record, time.time() - obj["LastModified"].timestamp()))
        return found

    def delete_reservation(self, owner_key: str, token: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(RESERVATIONS_DIR, owner_key, f"{token}.json"))
