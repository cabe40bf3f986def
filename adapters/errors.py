"""Typed errors shared by every layer.

The ingress maps each type to one OpenAI-style HTTP error, once (deployments/api/http_errors.py).
Code decides what went wrong by the exception's type, never by its message text.
"""

from __future__ import annotations


class LorafleetError(Exception):
    """Base class; `param` names the request field at fault, when there is one."""

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param

    def __reduce__(self):
        # Errors cross process boundaries (an engine replica's error reaches the ingress
        # through Ray's pickling). Pickle's default rebuilds an exception as cls(*args),
        # which loses keyword-only fields (retriable, retry_after_s) or fails outright;
        # rebuild from the full state instead, for every subclass.
        return (_rebuild, (type(self), self.args), self.__dict__)


def _rebuild(cls: type, args: tuple) -> "LorafleetError":
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    return err


class AdapterNotFound(LorafleetError):
    """No servable model of that name (the base's name and valid adapters are servable)."""


class AdapterInvalid(LorafleetError):
    """The adapter exists but fails validation; it is never served."""


class AdapterLoadError(LorafleetError):
    """Loading a valid adapter into an engine failed; `retriable` says whether another try may work."""

    def __init__(self, message: str, *, retriable: bool, param: str | None = None):
        super().__init__(message, param=param)
        self.retriable = retriable


class AdapterExists(LorafleetError):
    """The adapter version being published already exists; versions are never overwritten (409)."""


class PayloadTooLarge(LorafleetError):
    """An upload (or what it unpacks to) exceeds a configured limit (413)."""


class NameTaken(LorafleetError):
    """The adapter name belongs to another owner (403). `owner` is that owner (None: the
    operator's), for the API's decision only: the message never names it, so a name
    owned privately answers exactly as one owned publicly."""

    def __init__(self, name: str, *, owner: str | None):
        super().__init__(
            f"The adapter name `{name}` belongs to another owner; only its owner or an admin may publish under it.",
            param="name",
        )
        self.name = name
        self.owner = owner


class QuotaExceeded(LorafleetError):
    """Publishing would take the tenant's stored adapters over a storage quota (403: the
    request is fine, the tenant must delete versions first). `limit` is `bytes` or
    `versions`; `used` and `maximum` are in that unit; `field` names the config field."""

    def __init__(self, message: str, *, tenant: str, limit: str, used: int, maximum: int, field: str):
        super().__init__(message)
        self.tenant = tenant
        self.limit = limit
        self.used = used
        self.maximum = maximum
        self.field = field


class BaseModelUnknown(LorafleetError):
    """The base model's module dimensions cannot be read, so adapters could not be checked
    against it: raised at start (the fleet does not start), never for a request."""
