"""The server's per-request limits (`server.limits`), checked at the ingress before any
engine sees the request, and the token reservation a request makes against its key's
tokens per minute.

Prompt tokens are counted by the caller (`count_prompt`, the API's
`deployments.api.prompt_tokens.PromptCounter`, which renders prompts the way vLLM does),
so "prompt too long" is a 400 naming the limit before generation, and the reservation
matches what the engine will report as `usage.prompt_tokens`.

Every numeric field a limit reads must be an integer (not "64", not 64.0): vLLM's
models would coerce those after the check, so `n: "64"` once slipped past `max_n`
and was reserved as n=1 while vLLM ran 64 choices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deployments.errors import InvalidRequest
from deployments.engine.protocol import Endpoint

_MAX_TOKEN_KEYS = {Endpoint.COMPLETIONS: ("max_tokens",), Endpoint.CHAT: ("max_tokens", "max_completion_tokens")}
# Fields a limit or the token reservation reads: each must be a JSON integer or null.
_INTEGER_FIELDS = {
    Endpoint.COMPLETIONS: ("n", "best_of", "max_tokens", "min_tokens"),
    Endpoint.CHAT: ("n", "best_of", "max_tokens", "max_completion_tokens", "min_tokens"),
}


def _require_integer(body: dict, key: str) -> None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidRequest(f"`{key}` must be an integer, got {value!r}.", param=key)


@dataclass(frozen=True)
class Admission:
    """A request as the ingress will send it, and the tokens it may use at most."""

    body: dict
    max_tokens_reserved: int
    prompt_tokens: int | None = None  # counted at the ingress (None: not counted)


def check_limits(
    body: dict,
    endpoint: Endpoint,
    *,
    max_tokens: int | None,
    max_n: int,
    max_prompt_tokens: int | None,
    max_model_len: int,
    count_prompt: Callable[[dict, Endpoint], list[int]] | None,
) -> Admission:
    """Raise InvalidRequest naming the limit, or return the body to send (max_tokens
    filled in with the server's limit when the client gave none) and its token bound:
    per prompt, its tokens plus max(n, best_of) x max_tokens."""
    for key in _INTEGER_FIELDS[endpoint]:
        _require_integer(body, key)
    n = body.get("n")
    n = 1 if n is None else n
    if n > max_n:
        raise InvalidRequest(f"`n` is {n}, above this server's limit of {max_n} (server.limits.max_n).", param="n")
    n = max(n, 1, body.get("best_of") or 1)  # best_of generates that many sequences, n are returned

    keys = _MAX_TOKEN_KEYS[endpoint]
    asked = [body[k] for k in keys if body.get(k) is not None]
    for key in keys:
        value = body.get(key)
        if max_tokens is not None and value is not None and value > max_tokens:
            raise InvalidRequest(
                f"`{key}` is {value}, above this server's limit of {max_tokens} tokens (server.limits.max_tokens).",
                param=key,
            )
    if not asked and max_tokens is not None:
        body = {**body, keys[-1]: max_tokens}
        asked = [max_tokens]

    prompts = count_prompt(body, endpoint) if count_prompt is not None else None
    if prompts is None:
        return Admission(body, 0)
    param = "messages" if endpoint is Endpoint.CHAT else "prompt"
    if max_prompt_tokens is not None:
        for tokens in prompts:
            if tokens > max_prompt_tokens:
                raise InvalidRequest(
                    f"The prompt has {tokens} tokens, above this server's limit of {max_prompt_tokens} "
                    "(server.limits.max_prompt_tokens).",
                    param=param,
                )
    reserved = 0
    for tokens in prompts:
        generate = min(asked) if asked else max(0, max_model_len - tokens)
        reserved += tokens + n * generate
    return Admission(body, reserved, sum(prompts))
