"""Schemathesis against the ingress's own OpenAPI schema, on the real fleet: requests
generated from the schema (valid ones and deliberately invalid ones) never get a 5xx
other than a 503 overload, and every error is OpenAI-shaped JSON
{"error": {"message", "type", "param", "code"}}.

Bounded: 40 examples per operation and generation mode (valid / invalid); generated
`max_tokens` and `n` are clamped so valid requests stay cheap (the point is the
input's shape, not its size). Schemathesis's own pytest loader (`from_fixture`) does
not work with pytest 9, so each operation's Hypothesis strategy is driven here.
"""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from bench.harness.probe import is_openai_error

# The ingress's documented operations (test_the_list_is_the_served_schema keeps it true).
OPERATIONS = [
    ("GET", "/health"), ("GET", "/fleet/replicas"), ("GET", "/fleet/placement"),
    ("POST", "/v1/adapters"), ("GET", "/v1/adapters"), ("GET", "/v1/adapters/{model}/archive"),
    ("GET", "/v1/adapters/{model}"), ("DELETE", "/v1/adapters/{model}"), ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"), ("GET", "/v1/usage"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
]
WITH_BODY = {("POST", "/v1/completions"), ("POST", "/v1/chat/completions")}
# Invalid inputs exist only where the schema documents a body (path parameters are any
# string; POST /v1/adapters reads multipart/JSON itself and documents none).
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if (m, p) in WITH_BODY
]
MAX_TOKENS, MAX_N = 8, 2
SERVED = ["poet", "haiku"]  # most generated names are unknown (404): steer some valid bodies to real models


def _clamp(body, steer: bool):
    if isinstance(body, dict):
        if steer and isinstance(body.get("model"), str) and len(body["model"]) % 3:
            body["model"] = SERVED[len(body["model"]) % 2]
        for key, cap in (("max_tokens", MAX_TOKENS), ("max_completion_tokens", MAX_TOKENS), ("n", MAX_N)):
            value = body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                body[key] = cap
    return body


@pytest.fixture(scope="module")
def served_schema(fleet):
    schema = schemathesis.openapi.from_url(f"{fleet.base_url}/openapi.json", timeout=30)
    schema.config.update(base_url=fleet.base_url)
    return schema


def test_the_list_is_the_served_schema(served_schema, fleet):
    import httpx

    paths = httpx.get(f"{fleet.base_url}/openapi.json", timeout=30).json()["paths"]
    served = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert served == set(OPERATIONS)
    assert {(m.upper(), p) for p, item in paths.items() for m, op in item.items() if "requestBody" in op} == WITH_BODY


@pytest.mark.parametrize("method, path, mode", CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES])
def test_generated_requests_get_no_5xx_and_openai_shaped_errors(served_schema, method, path, mode):
    operation = served_schema[path][method]
    seen = []

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        if not isinstance(case.body, type(schemathesis.core.NOT_SET)):
            case.body = _clamp(case.body, steer=mode is GenerationMode.POSITIVE)
        response = case.call(timeout=60)
        seen.append(response.status_code)
        status = response.status_code
        what = f"{case.method} {case.formatted_path} body={str(case.body)[:300]!r} -> {status}: {response.text[:300]}"
        assert status < 500 or status == 503, what
        if status >= 400:
            assert is_openai_error(json.loads(response.text)), what

    check()
    assert seen, "no request was generated"
