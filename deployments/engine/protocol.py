"""What an engine replica streams back to the ingress.

Every call is a stream: first one `ResponseHead` (status, who served it, whether the
body is Server-Sent Events), then the body as strings, and last, for a completed
request, one `FinalUsage` (the engine's token counts, which the ingress keeps for the
usage ledger and rate limits and never forwards). Errors travel the same way
(a head with a 4xx/5xx status and an OpenAI error body), so the ingress never has to
guess what an exception from a remote actor meant.

The call itself is one `EngineCall`: the checked body, the resolved base and adapter, and the
ids that let a request's bill find its way back when its client leaves mid-generation
(the engine then reports an `AbortedUsage` through the fleet controller to the ingress
replica named in the call, see deployments.tenancy.billing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

from adapters.validation import AdapterSpec


# vLLM names some parameters after its internals; clients know the request field.
PARAM_NAMES = {"input_tokens": "prompt"}


class Endpoint(str, Enum):
    COMPLETIONS = "completions"
    CHAT = "chat"


@dataclass(frozen=True)
class ResponseHead:
    status: int
    replica_id: str
    streaming: bool


@dataclass(frozen=True)
class FinalUsage:
    """The engine's usage of a completed request: the same numbers as the response's
    `usage` (summed over all choices), also for streams that did not ask for it."""

    prompt_tokens: int
    completion_tokens: int


def error_body(message: str, *, err_type: str, code: str | int | None, param: str | None = None) -> str:
    """The OpenAI error shape: {"error": {"message", "type", "param", "code"}}."""
    return json.dumps({"error": {"message": message, "type": err_type, "param": param, "code": code}})


@dataclass(frozen=True)
class EngineCall:
    """One request as an engine replica receives it."""

    endpoint: Endpoint
    body: dict
    adapter: AdapterSpec | None
    request_id: str  # unique per request: vLLM's request ids carry it
    ingress_id: str = ""  # the ingress replica that holds the request's bill
    base: str = ""  # the base model's served name: the engine deployment the call goes to


@dataclass(frozen=True)
class AbortedUsage:
    """What the engine had produced for a request when it was stopped (its client went away)."""

    request_id: str
    ingress_id: str
    prompt_tokens: int
    completion_tokens: int
