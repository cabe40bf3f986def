"""/openapi.json documents the completion endpoints' request bodies and their errors
(the handlers read the raw body, so FastAPI cannot infer them), and the documented
schemas accept the requests the README shows."""

import jsonschema
import pytest

from deployments.api.openapi import CHAT_REQUEST, COMPLETION_REQUEST, ERROR_RESPONSE
from tests.api_harness import ApiHarness


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_assets):
    return ApiHarness.create(tmp_path_factory.mktemp("openapi"), demo_assets / "adapters", demo_assets / "base").client.app


@pytest.mark.parametrize("path, required", [("/v1/completions", ["model", "prompt"]), ("/v1/chat/completions", ["model", "messages"])])
def test_completion_endpoints_document_their_body_and_openai_errors(app, path, required):
    operation = app.openapi()["paths"][path]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == required
    assert body["additionalProperties"] is True  # every other vLLM parameter is still accepted
    for status in ("400", "404", "413", "503"):
        assert operation["responses"][status]["content"]["application/json"]["schema"] == ERROR_RESPONSE


def test_documented_schemas_accept_the_readme_requests_and_refuse_a_bodyless_one():
    jsonschema.validate({"model": "poet", "prompt": "Hello", "max_tokens": 16}, COMPLETION_REQUEST)
    jsonschema.validate({"model": "poet", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}, CHAT_REQUEST)
    jsonschema.validate({"model": "poet", "prompt": [[1, 2, 3]], "stream": True, "logit_bias": {}}, COMPLETION_REQUEST)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": "poet"}, COMPLETION_REQUEST)
    jsonschema.validate({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": "x"}}, ERROR_RESPONSE)
