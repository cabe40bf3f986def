"""Typed errors of the serving layer: the request, the caller and the fleet's capacity.

Adapter errors (the artifact and the store) live in `adapters.errors`; these are what
only the serving layer raises. Every one is a `LorafleetError`, mapped to one
OpenAI-style HTTP answer in one place (`deployments.api.http_errors`). Pure: no Ray,
no FastAPI, so the tenancy rules and the engine raise them alike.
"""

from __future__ import annotations

from adapters.errors import LorafleetError

__all__ = ["EngineDead", "InvalidRequest", "LorafleetError", "ModelUnavailable", "Overloaded", "PermissionDenied",
           "RateLimited", "StoreUnavailable", "Unauthenticated"]


class InvalidRequest(LorafleetError):
    """The request itself is malformed or out of bounds (400)."""


class Overloaded(LorafleetError):
    """The fleet cannot take the request now; the client should retry after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: int = 1, server_timing: str = ""):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.server_timing = server_timing  # where the refused request's time went (a header)


class StoreUnavailable(Overloaded):
    """A database the ingress depends on (the usage ledger's, the shared rate limits')
    cannot be reached now: 503 with Retry-After, like any capacity the server lacks for
    the moment. The message never carries the database's address or credentials."""


class EngineDead(LorafleetError):
    """The replica's engine died; Ray Serve's health check replaces the replica.

    `replica` names the replica (or Ray actor id) that died, when known, so the ingress
    can retry a request that got no answer yet on another replica."""

    def __init__(self, message: str, *, replica: str | None = None):
        super().__init__(message)
        self.replica = replica


class Unauthenticated(LorafleetError):
    """No API key, or one that matches no key on file (401)."""


class PermissionDenied(LorafleetError):
    """A valid key whose role may not do this (403)."""


class RateLimited(LorafleetError):
    """A per-key limit is exhausted; the same request may pass after `retry_after_s` (429).
    `kind` is the exhausted budget, `requests` or `tokens` (OpenAI's error `type` for 429s)."""

    def __init__(self, message: str, *, retry_after_s: int, kind: str = "requests"):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.kind = kind


class RequestTimeout(LorafleetError):
    """The client did not send its request body within the server's deadline (408)."""


class ModelUnavailable(LorafleetError):
    """A base model's files cannot be fetched (a wrong, empty or unreachable `source`):
    the replica that needs them fails to start, with a message naming the source."""
