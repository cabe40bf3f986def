"""Check an OpenAI request body before it reaches an engine.

Uses vLLM's own protocol models (the same ones the replica parses with), so what
passes here is what the engine accepts; adds the fleet's limits vLLM checks late or
not at all (max_tokens bounds). Every failure names the parameter at fault.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from deployments.errors import InvalidRequest
from deployments.engine.protocol import PARAM_NAMES, Endpoint


def parse_json_object(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidRequest(f"The request body is not valid JSON: {err}") from None
    except RecursionError:  # e.g. 100k "[": the parser's stack, not a client's right to a 500
        raise InvalidRequest("The request body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def requested_model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` is required and must be a non-empty string.", param="model")
    return model


def _request_model(endpoint: Endpoint):
    if endpoint is Endpoint.COMPLETIONS:
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest

        return CompletionRequest
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return ChatCompletionRequest


def check_max_tokens(body: dict, endpoint: Endpoint, max_model_len: int) -> None:
    keys = ("max_tokens",) if endpoint is Endpoint.COMPLETIONS else ("max_tokens", "max_completion_tokens")
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"`{key}` must be an integer, got {value!r}.", param=key)
        # max_tokens=0 is meaningful only with echo (score the prompt, generate nothing).
        minimum = 0 if endpoint is Endpoint.COMPLETIONS and body.get("echo") else 1
        if value < minimum:
            raise InvalidRequest(f"`{key}` must be at least {minimum}, got {value}.", param=key)
        if value > max_model_len:
            raise InvalidRequest(
                f"`{key}` is {value}, above this model's context length of {max_model_len} tokens.", param=key
            )


# Token ids travel through vLLM as int32 tensors and through the tokenizer as u32, so
# anything outside [0, 2**31) is out of every vocabulary. vLLM checks the exact
# vocabulary itself (a 400), but with `echo` it decodes the prompt first, and the
# tokenizer raises OverflowError beyond u32: a 500 found by Schemathesis.
MAX_TOKEN_ID = 2**31 - 1


def _check_prompt_token_ids(body: dict) -> None:
    prompt = body.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        return
    lists = prompt if isinstance(prompt[0], list) else [prompt]
    for ids in lists:
        if not isinstance(ids, list):
            return  # a mixed batch: vLLM's schema names the problem
        for token_id in ids:
            if isinstance(token_id, int) and not isinstance(token_id, bool) and not 0 <= token_id <= MAX_TOKEN_ID:
                raise InvalidRequest(
                    f"Invalid value for `prompt`: token id {token_id} is out of the vocabulary "
                    f"(token ids are integers from 0 to the vocabulary size - 1).",
                    param="prompt",
                )


def check_request(body: dict, endpoint: Endpoint, *, max_model_len: int) -> None:
    """Raise InvalidRequest naming the parameter if the body is not a valid request."""
    from vllm.exceptions import VLLMClientError

    check_max_tokens(body, endpoint, max_model_len)
    if endpoint is Endpoint.COMPLETIONS:
        _check_prompt_token_ids(body)
    try:
        _request_model(endpoint).model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"Invalid value for `{param}`: {first['msg']}.", param=param) from None
    except ValueError as err:  # model validators raise plain ValueError
        raise InvalidRequest(str(err)) from None
    except VLLMClientError as err:
        # Some of vLLM's model validators raise VLLMValidationError, which is not a
        # ValueError, so pydantic lets it through (found by the property tests: a body
        # without `prompt` was a 500).
        parameter = getattr(err, "parameter", None)
        raise InvalidRequest(str(err), param=PARAM_NAMES.get(parameter, parameter)) from None
    except RecursionError:
        raise InvalidRequest("The request is nested too deeply.") from None
    except (TypeError, AttributeError, KeyError, IndexError) as err:
        # vLLM's "before" validators read the raw body assuming its types (e.g.
        # `structured_outputs: 0` -> AttributeError): a crash there means the body is
        # malformed, and the client needs a 400, not a 500 (found by the property tests).
        raise InvalidRequest(f"The request is malformed ({type(err).__name__}: {err}).") from None
