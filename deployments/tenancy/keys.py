"""API keys: who is calling, as which tenant, with which role and limits.

Keys are never stored: the keys file holds the sha256 of each key (a key is 256 random
bits, so a plain hash is as good as a slow one and costs ~1 us per request). Lookup
hashes the presented key and compares it with every hash on file using
`hmac.compare_digest`, without stopping at the first match, so the time taken says
nothing about which hashes exist. The file may be a mounted Kubernetes Secret: it is
re-read when it changes, and a broken rewrite keeps the last good keys (logged).

The file (YAML, or JSON which is YAML too):

    keys:
      - id: acme-ci            # optional; default "key-" + the first 12 hex of the hash
        tenant: acme
        role: tenant           # or admin
        sha256: 3f5a...        # 64 hex digits, from `lorafleet keys create`
        limits:                # optional; each missing limit falls back to server.limits
          requests_per_second: 5
          tokens_per_minute: 20000
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from adapters.config_files import field_problems, read_yaml
from deployments.errors import Unauthenticated

logger = logging.getLogger(__name__)

ADMIN = "admin"
TENANT = "tenant"
KEY_PREFIX = "lf-"
# Tenant names are adapter owners and a metric label: same rules as adapter names.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file and the bad entry."""


class KeyLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    requests_per_second: PositiveFloat | None = Field(default=None, description="Request rate of this key; None: the server default.")
    tokens_per_minute: PositiveInt | None = Field(default=None, description="Token budget per minute of this key; None: the server default.")


class KeyEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str | None = Field(default=None, pattern=NAME_PATTERN, description="Name of the key in the usage ledger and logs.")
    tenant: str = Field(pattern=NAME_PATTERN, description="The tenant the key acts for (owner of its adapters).")
    role: Literal["admin", "tenant"] = Field(description="admin: sees and manages everything; tenant: its own and public adapters.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 hex digest of the key.")
    limits: KeyLimits = KeyLimits()

    @property
    def key_id(self) -> str:
        return self.id or f"key-{self.sha256[:12]}"


class KeysFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    keys: tuple[KeyEntry, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> "KeysFile":
        for what, values in (("sha256", [k.sha256 for k in self.keys]), ("id", [k.key_id for k in self.keys])):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"duplicate key {what}: {', '.join(d[:16] for d in dupes)}")
        return self


@dataclass(frozen=True)
class Principal:
    """The caller of one request, with its effective limits (None = unlimited)."""

    key_id: str
    tenant: str
    role: str
    requests_per_second: float | None = None
    tokens_per_minute: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


def anonymous(default: KeyLimits = KeyLimits()) -> Principal:
    """Everyone, when auth is off (the local demo): an admin, under the default limits."""
    return Principal("anonymous", "anonymous", ADMIN, default.requests_per_second, default.tokens_per_minute)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bearer_token(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header (what the openai client sends)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def parse_keys(data: object, source: str = "keys file") -> KeysFile:
    if data is None:
        data = {}
    try:
        return KeysFile.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(field_problems(err))
        raise KeysFileError(f"{source}: {problems}") from None


def read_keys_file(path: str | Path) -> KeysFile:
    path = Path(path)
    return parse_keys(read_yaml(path, KeysFileError, "keys file"), str(path))


class KeyRing:
    """The keys on file, with the server's default limits filled in."""

    def __init__(self, keys: KeysFile, default: KeyLimits = KeyLimits()):
        self._entries = [
            (
                bytes.fromhex(k.sha256),
                Principal(
                    k.key_id,
                    k.tenant,
                    k.role,
                    k.limits.requests_per_second or default.requests_per_second,
                    k.limits.tokens_per_minute or default.tokens_per_minute,
                ),
            )
            for k in keys.keys
        ]

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, key: str | None) -> Principal:
        """The key's principal, or Unauthenticated. Compares against every hash on file."""
        if not key:
            raise Unauthenticated("Missing API key: send it as `Authorization: Bearer <key>`.")
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for stored, principal in self._entries:
            if hmac.compare_digest(stored, digest) and found is None:
                found = principal
        if found is None:
            raise Unauthenticated("Incorrect API key provided.")
        return found


class KeysFileWatcher:
    """The current KeyRing of a keys file, re-read when the file changes (checked at most
    every `check_period_s`). A rewrite that does not parse keeps the previous keys, so a
    bad edit cannot lock every tenant out or let anyone in."""

    def __init__(
        self,
        path: str | Path,
        default: KeyLimits = KeyLimits(),
        *,
        check_period_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        self.default = default
        self.check_period_s = check_period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._ring = KeyRing(read_keys_file(self.path), default)  # a bad file at start is fatal
        self._checked = clock()

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)  # follows the Secret's ..data symlink
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def ring(self) -> KeyRing:
        now = self._clock()
        if now - self._checked < self.check_period_s:
            return self._ring
        with self._lock:
            self._checked = now
            signature = self._stat()
            if signature != self._signature:
                self._signature = signature
                try:
                    self._ring = KeyRing(read_keys_file(self.path), self.default)
                    logger.info("keys file %s reloaded: %d keys", self.path, len(self._ring))
                except KeysFileError as err:
                    logger.error("keys file changed but cannot be used, keeping the previous keys: %s", err)
        return self._ring

    def authenticate(self, key: str | None) -> Principal:
        return self.ring().authenticate(key)


def key_entry_yaml(key: str, tenant: str, role: str, key_id: str | None = None) -> str:
    """The keys-file entry for `key` (what `lorafleet keys create` prints)."""
    raw = {"tenant": tenant, "role": role, "sha256": hash_key(key), **({"id": key_id} if key_id else {})}
    entry = parse_keys({"keys": [raw]}, "new key").keys[0]  # KeysFileError names a bad tenant or id
    return yaml.safe_dump({"keys": [entry.model_dump(exclude_defaults=True)]}, sort_keys=False)
