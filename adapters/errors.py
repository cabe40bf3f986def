"""Typed errors shared by every layer.

The ingress maps each type to one OpenAI-style HTTP error, once (deployments/errors.py).
Code decides what went wrong by the exception's type, never by its message text.
"""

from __future__ import annotations


class LorafleetError(Exception):
    """Base class; `param` names the request field at fault, when there is one."""

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class AdapterNotFound(LorafleetError):
    """No servable model of that name (the base's name and valid adapters are servable)."""


class AdapterInvalid(LorafleetError):
    """The adapter exists but fails validation; it is never served."""


class AdapterLoadError(LorafleetError):
    """Loading a valid adapter into an engine failed; `retriable` says whether another try may work."""

    def __init__(self, message: str, *, retriable: bool, param: str | None = None):
        super().__init__(message, param=param)
        self.retriable = retriable


class InvalidRequest(LorafleetError):
    """The request itself is malformed or out of bounds (400)."""


class Overloaded(LorafleetError):
    """The fleet cannot take the request now; the client should retry after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineDead(LorafleetError):
    """The replica's engine died; Ray Serve's health check replaces the replica."""


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
