"""Every bad input gets its status and an OpenAI-shaped error, and the next good request succeeds."""

import httpx
import pytest

LONG_PROMPT = "a" * 600  # byte-level tokenizer: 600 tokens > max_model_len 512

CASES = [
    # (id, method, path, body (str: raw bytes), status, code, param)
    ("malformed json", "POST", "/v1/completions", "{bad json", 400, "invalid_value", None),
    ("body not object", "POST", "/v1/completions", "[1, 2]", 400, "invalid_value", None),
    ("missing model", "POST", "/v1/completions", {"prompt": "x"}, 400, "invalid_value", "model"),
    ("unknown model", "POST", "/v1/completions", {"model": "no-such-adapter", "prompt": "x"}, 404, "model_not_found", "model"),
    ("traversal model", "POST", "/v1/chat/completions", {"model": "../../etc/passwd", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found", "model"),
    ("negative max_tokens", "POST", "/v1/completions", {"model": "poet", "prompt": "x", "max_tokens": -1}, 400, "invalid_value", "max_tokens"),
    ("oversized max_tokens", "POST", "/v1/completions", {"model": "poet", "prompt": "x", "max_tokens": 1_000_000}, 400, "invalid_value", "max_tokens"),
    ("string max_tokens", "POST", "/v1/chat/completions", {"model": "poet", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}, 400, "invalid_value", "max_tokens"),
    ("wrong type temperature", "POST", "/v1/completions", {"model": "poet", "prompt": "x", "temperature": "hot"}, 400, "invalid_value", "temperature"),
    ("messages not a list", "POST", "/v1/chat/completions", {"model": "poet", "messages": "hi"}, 400, "invalid_value", "messages"),
    ("prompt longer than max_model_len", "POST", "/v1/completions", {"model": "poet", "prompt": LONG_PROMPT, "max_tokens": 4}, 400, "invalid_value", "prompt"),
    ("prompt too long streamed", "POST", "/v1/completions", {"model": "haiku", "prompt": LONG_PROMPT, "max_tokens": 4, "stream": True}, 400, "invalid_value", "prompt"),
    ("chat too long", "POST", "/v1/chat/completions", {"model": "poet", "messages": [{"role": "user", "content": LONG_PROMPT}]}, 400, "invalid_value", None),
    ("oversized body", "POST", "/v1/completions", {"model": "poet", "prompt": "x" * 2_000_000}, 413, "request_too_large", None),
    # Found by the property tests (tests/unit/test_hostile_parsing.py): these were 500s.
    ("missing prompt", "POST", "/v1/completions", {"model": "poet", "max_tokens": 4}, 400, "invalid_value", "prompt"),
    ("vllm validator crash", "POST", "/v1/completions", {"model": "poet", "prompt": "x", "structured_outputs": 0}, 400, "invalid_value", None),
    ("deeply nested body", "POST", "/v1/completions", "[" * 100_000, 400, "invalid_value", None),
    ("unknown route", "GET", "/v1/nothing-here", None, 404, "not_found", None),
    ("wrong method", "GET", "/v1/completions", None, 405, "method_not_allowed", None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_openai_error_and_fleet_keeps_serving(fleet, case):
    _, method, path, body, status, code, param = case
    kwargs = {"content": body} if isinstance(body, str) else ({"json": body} if body is not None else {})
    response = httpx.request(method, f"{fleet.base_url}{path}", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    good = httpx.post(f"{fleet.base_url}/v1/completions", json={"model": "poet", "prompt": "ok", "max_tokens": 2}, timeout=60)
    assert good.status_code == 200, good.text
