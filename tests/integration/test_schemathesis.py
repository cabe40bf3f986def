"""Schemathesis against the ingress's own OpenAPI schema, on the real fleet: requests
generated from the schema (valid ones and deliberately invalid ones) never get a 5xx
other than a 503 overload, and every error is OpenAI-shaped JSON
{"error": {"message", "type", "param", "code"}}.

Bounded: at most 60 examples per operation; generated `max_tokens` and `n` are clamped
so valid requests stay cheap (the point is the input's shape, not its size).
"""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from deployments.probe import is_openai_error

schema = schemathesis.pytest.from_fixture("ingress_schema")

MAX_TOKENS, MAX_N = 8, 2


@pytest.fixture
def ingress_schema(fleet):
    loaded = schemathesis.openapi.from_url(f"{fleet.base_url}/openapi.json", timeout=30)
    loaded.config.update(base_url=fleet.base_url)
    return loaded


def _clamp(body):
    if isinstance(body, dict):
        for key, cap in (("max_tokens", MAX_TOKENS), ("max_completion_tokens", MAX_TOKENS), ("n", MAX_N)):
            if isinstance(body.get(key), int) and not isinstance(body.get(key), bool) and body[key] > cap:
                body[key] = cap
    return body


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_no_5xx_and_openai_shaped_errors(case):
    case.body = _clamp(case.body) if case.body is not None else case.body
    response = case.call(timeout=60)
    status = response.status_code
    assert status < 500 or status == 503, f"{case.method} {case.formatted_path} -> {status}: {response.text[:500]}"
    if status >= 400:
        payload = json.loads(response.text)
        assert is_openai_error(payload), f"{case.method} {case.formatted_path} -> {status}: {response.text[:500]}"
