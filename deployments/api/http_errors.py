"""Map lorafleet's typed errors to OpenAI-style HTTP errors, in one place.

The OpenAI API uses string `type`s (`invalid_request_error`, ...) and a `code`;
clients (the `openai` SDK among them) pick the exception class from the HTTP status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from adapters.errors import (
    AdapterExists,
    AdapterInvalid,
    AdapterLoadError,
    AdapterNotFound,
    LorafleetError,
    NameTaken,
    PayloadTooLarge,
    QuotaExceeded,
)
from deployments.errors import (EngineDead, InvalidRequest, Overloaded, PermissionDenied, RateLimited, RequestTimeout,
                                StoreUnavailable, Unauthenticated)
from deployments.engine.protocol import error_body

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpError:
    status: int
    body: str
    headers: dict[str, str]


# (HTTP status, OpenAI error type, code) per error type; the most specific type in an
# error's MRO wins, so a subclass inherits its parent's answer unless listed itself.
_ANSWERS: dict[type, tuple[int, str, str]] = {
    AdapterNotFound: (404, "invalid_request_error", "model_not_found"),
    AdapterInvalid: (400, "invalid_request_error", "adapter_invalid"),
    AdapterExists: (409, "invalid_request_error", "adapter_exists"),
    PayloadTooLarge: (413, "invalid_request_error", "request_too_large"),
    RequestTimeout: (408, "invalid_request_error", "request_timeout"),
    InvalidRequest: (400, "invalid_request_error", "invalid_value"),
    Unauthenticated: (401, "invalid_request_error", "invalid_api_key"),
    PermissionDenied: (403, "invalid_request_error", "permission_denied"),
    NameTaken: (403, "invalid_request_error", "permission_denied"),
    QuotaExceeded: (403, "invalid_request_error", "quota_exceeded"),
    RateLimited: (429, "requests", "rate_limit_exceeded"),
    Overloaded: (503, "server_error", "overloaded"),
    StoreUnavailable: (503, "server_error", "store_unavailable"),
    AdapterLoadError: (500, "server_error", "adapter_load_failed"),
    EngineDead: (503, "server_error", "engine_unavailable"),
    LorafleetError: (500, "server_error", "internal_error"),
}


def _answer(err: LorafleetError) -> tuple[int, str, str]:
    for cls in type(err).__mro__:
        if cls in _ANSWERS:
            return _ANSWERS[cls]
    return _ANSWERS[LorafleetError]


def to_http_error(err: LorafleetError) -> HttpError:
    status, err_type, code = _answer(err)
    headers: dict[str, str] = {}
    if isinstance(err, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(err, RateLimited):
        err_type = err.kind  # OpenAI's 429 type names the exhausted budget: requests or tokens
        headers["Retry-After"] = str(err.retry_after_s)
    elif isinstance(err, Overloaded):
        headers["Retry-After"] = str(err.retry_after_s)
        if err.server_timing:
            headers["Server-Timing"] = err.server_timing
    elif isinstance(err, AdapterLoadError) and err.retriable:
        status = 503
        headers["Retry-After"] = "1"
    elif isinstance(err, EngineDead):
        headers["Retry-After"] = "5"
    return HttpError(status, error_body(err.message, err_type=err_type, code=code, param=err.param), headers)
