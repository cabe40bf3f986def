"""Map lorafleet's typed errors to OpenAI-style HTTP errors, in one place.

The OpenAI API uses string `type`s (`invalid_request_error`, ...) and a `code`;
clients (the `openai` SDK among them) pick the exception class from the HTTP status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from adapters.errors import AdapterExists, AdapterInvalid, AdapterLoadError, AdapterNotFound, LorafleetError, PayloadTooLarge
from deployments.errors import EngineDead, InvalidRequest, Overloaded, PermissionDenied, RateLimited, Unauthenticated
from deployments.engine.protocol import error_body

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpError:
    status: int
    body: str
    headers: dict[str, str]


def to_http_error(err: LorafleetError) -> HttpError:
    headers: dict[str, str] = {}
    if isinstance(err, AdapterNotFound):
        status, err_type, code = 404, "invalid_request_error", "model_not_found"
    elif isinstance(err, AdapterInvalid):
        status, err_type, code = 400, "invalid_request_error", "adapter_invalid"
    elif isinstance(err, AdapterExists):
        status, err_type, code = 409, "invalid_request_error", "adapter_exists"
    elif isinstance(err, PayloadTooLarge):
        status, err_type, code = 413, "invalid_request_error", "request_too_large"
    elif isinstance(err, InvalidRequest):
        status, err_type, code = 400, "invalid_request_error", "invalid_value"
    elif isinstance(err, Unauthenticated):
        status, err_type, code = 401, "invalid_request_error", "invalid_api_key"
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(err, PermissionDenied):
        status, err_type, code = 403, "invalid_request_error", "permission_denied"
    elif isinstance(err, RateLimited):
        status, err_type, code = 429, err.kind, "rate_limit_exceeded"
        headers["Retry-After"] = str(err.retry_after_s)
    elif isinstance(err, Overloaded):
        status, err_type, code = 503, "server_error", "overloaded"
        headers["Retry-After"] = str(err.retry_after_s)
    elif isinstance(err, AdapterLoadError):
        status = 503 if err.retriable else 500
        err_type, code = "server_error", "adapter_load_failed"
        if err.retriable:
            headers["Retry-After"] = "1"
    elif isinstance(err, EngineDead):
        status, err_type, code = 503, "server_error", "engine_unavailable"
        headers["Retry-After"] = "5"
    else:
        status, err_type, code = 500, "server_error", "internal_error"
    return HttpError(status, error_body(err.message, err_type=err_type, code=code, param=err.param), headers)
