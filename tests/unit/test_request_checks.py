"""Request checks and error mapping: every bad input gets a status and names the parameter."""

import json

import pytest

from adapters.errors import AdapterInvalid, AdapterLoadError, AdapterNotFound
from deployments.errors import EngineDead, InvalidRequest, Overloaded
from deployments.api.http_errors import to_http_error
from deployments.engine.protocol import Endpoint
from deployments.api.request_checks import check_request, parse_json_object, requested_model


@pytest.mark.parametrize("raw", [b"{bad", b"", b"\xff\xfe", b"[1, 2]", b'"text"', b"null"])
def test_non_object_bodies_are_400(raw):
    with pytest.raises(InvalidRequest):
        parse_json_object(raw)


@pytest.mark.parametrize("body", [{}, {"model": ""}, {"model": 3}, {"model": None}])
def test_model_is_required(body):
    with pytest.raises(InvalidRequest) as err:
        requested_model(body)
    assert err.value.param == "model"


@pytest.mark.parametrize(
    "endpoint, body, param",
    [
        (Endpoint.COMPLETIONS, {"prompt": "x", "max_tokens": -1}, "max_tokens"),
        (Endpoint.COMPLETIONS, {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        (Endpoint.COMPLETIONS, {"prompt": "x", "max_tokens": 10_000}, "max_tokens"),
        (Endpoint.COMPLETIONS, {"prompt": "x", "max_tokens": "9"}, "max_tokens"),
        (Endpoint.COMPLETIONS, {"prompt": "x", "max_tokens": True}, "max_tokens"),
        (Endpoint.CHAT, {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -5}, "max_completion_tokens"),
        (Endpoint.COMPLETIONS, {"prompt": "x", "temperature": "hot"}, "temperature"),
        (Endpoint.CHAT, {"messages": "hello"}, "messages"),
        (Endpoint.COMPLETIONS, {"prompt": "x", "stream": "yes please"}, "stream"),
        # echo decodes the prompt before vLLM checks the vocabulary: beyond u32 that was a 500
        (Endpoint.COMPLETIONS, {"prompt": [[4294967296]], "echo": True}, "prompt"),
        (Endpoint.COMPLETIONS, {"prompt": [5, -1], "echo": True}, "prompt"),
        (Endpoint.COMPLETIONS, {"prompt": [2**31]}, "prompt"),
    ],
)
def test_bad_parameters_are_named(endpoint, body, param):
    with pytest.raises(InvalidRequest) as err:
        check_request({"model": "m", **body}, endpoint, max_model_len=512)
    assert err.value.param is not None and err.value.param.startswith(param)


def test_echo_with_zero_max_tokens_scores_the_prompt_and_is_allowed():
    check_request({"model": "m", "prompt": "x", "echo": True, "max_tokens": 0}, Endpoint.COMPLETIONS, max_model_len=512)


def test_good_requests_pass():
    check_request({"model": "m", "prompt": "x", "max_tokens": 16, "stream": True}, Endpoint.COMPLETIONS, max_model_len=512)
    check_request({"model": "m", "prompt": [[0, 17, 2**31 - 1]], "echo": True}, Endpoint.COMPLETIONS, max_model_len=512)
    check_request({"model": "m", "messages": [{"role": "user", "content": "x"}]}, Endpoint.CHAT, max_model_len=512)


@pytest.mark.parametrize(
    "err, status, code, retry_after",
    [
        (AdapterNotFound("no such model", param="model"), 404, "model_not_found", None),
        (AdapterInvalid("bad adapter", param="model"), 400, "adapter_invalid", None),
        (InvalidRequest("bad", param="max_tokens"), 400, "invalid_value", None),
        (Overloaded("busy", retry_after_s=3), 503, "overloaded", "3"),
        (AdapterLoadError("disk hiccup", retriable=True), 503, "adapter_load_failed", "1"),
        (AdapterLoadError("corrupt", retriable=False), 500, "adapter_load_failed", None),
        (EngineDead("gone"), 503, "engine_unavailable", "5"),
    ],
)
def test_errors_map_to_openai_shape(err, status, code, retry_after):
    http = to_http_error(err)
    body = json.loads(http.body)["error"]
    assert http.status == status
    assert body["code"] == code
    assert body["message"] == err.message
    assert set(body) == {"message", "type", "param", "code"}
    assert http.headers.get("Retry-After") == retry_after


def test_remote_failures_are_classified_by_type():
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    from deployments.serve.failures import classify_engine_failure

    overloaded = to_http_error(classify_engine_failure(BackPressureError(num_queued_requests=9, max_queued_requests=8)))
    assert overloaded.status == 503 and overloaded.headers["Retry-After"] == "1"
    assert to_http_error(classify_engine_failure(ActorDiedError())).status == 503
    assert to_http_error(classify_engine_failure(RuntimeError("boom"))).status == 500
    typed = AdapterNotFound("gone", param="model")
    assert classify_engine_failure(typed) is typed


def test_auth_and_limit_errors_map_to_openai_statuses_and_codes():
    from deployments.errors import PermissionDenied, RateLimited, Unauthenticated

    unauth = to_http_error(Unauthenticated("Incorrect API key provided."))
    assert (unauth.status, json.loads(unauth.body)["error"]["code"], unauth.headers) == (
        401, "invalid_api_key", {"WWW-Authenticate": "Bearer"})
    assert to_http_error(PermissionDenied("no")).status == 403
    limited = to_http_error(RateLimited("slow down", retry_after_s=7, kind="tokens"))
    error = json.loads(limited.body)["error"]
    assert (limited.status, limited.headers["Retry-After"], error["code"], error["type"]) == (429, "7", "rate_limit_exceeded", "tokens")
