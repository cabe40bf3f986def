"""The `helm test` hook (issue 16, item 7): a pod that sends one completion through
KubeRay's serve Service and checks the answer. The rendered pod's own command runs here
against a local HTTP server playing lorafleet's API, answering well or in each wrong way the
check must catch (tests/integration/test_helm_test_hook.py runs it against a real fleet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helm.rendering import NAMESPACE, RELEASE, render_chart

MODEL = "llama-3.1-8b-instruct"


def _hook(values: dict | None = None) -> dict:
    (pod,) = render_chart(values).of_kind("Pod")
    return pod


def good_answer(body: dict) -> tuple[int, dict, dict]:
    payload = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": body["model"],
               "choices": [{"index": 0, "text": " world", "finish_reason": "length", "logprobs": None}],
               "usage": {"prompt_tokens": 1, "completion_tokens": body["max_tokens"],
                         "total_tokens": 1 + body["max_tokens"]}}
    return 200, payload, {"x-lorafleet-replica": "abc123"}


class FakeLorafleet:
    """An HTTP server answering POST /v1/completions with `answer(body)`; records requests."""

    def __init__(self, answer):
        self.requests: list[tuple[dict, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, dict(self.headers), body))
                status, payload, headers = answer(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def run_hook(pod: dict, url: str, secrets: dict[tuple[str, str], str] | None = None) -> subprocess.CompletedProcess:
    """The pod's container command, with its environment, pointed at `url`."""
    (container,) = pod["spec"]["containers"]
    env = {"PATH": os.environ["PATH"]}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = (secrets or {})[(ref["name"], ref["key"])]
    env["LORAFLEET_URL"] = url
    python, *args = container["command"]
    assert python == "python"
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def serve():
    servers = []

    def start(answer=good_answer) -> FakeLorafleet:
        servers.append(FakeLorafleet(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_the_hook_is_a_helm_test_pod_calling_kuberays_serve_service():
    pod = _hook({"tests": {"apiKeySecret": "test-key"}})
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["LORAFLEET_URL"]["value"] == f"http://{RELEASE}-lorafleet-serve-svc.{NAMESPACE}.svc:8000"
    assert env["LORAFLEET_MODEL"]["value"] == MODEL
    assert env["LORAFLEET_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "test-key", "key": "api-key"}
    assert container["command"][:2] == ["python", "-c"]


def test_the_hook_passes_on_a_well_formed_completion_and_sends_the_key(serve):
    server = serve()
    result = run_hook(_hook({"tests": {"apiKeySecret": "test-key", "maxTokens": 4}}), server.url,
                      {("test-key", "api-key"): "sk-test"})
    assert result.returncode == 0, result.stderr
    assert "OK: llama-3.1-8b-instruct answered 4 tokens" in result.stdout
    ((path, headers, body),) = server.requests
    assert path == "/v1/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body == {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}


def _variant(change):
    def answer(body):
        status, payload, headers = good_answer(body)
        return change(status, payload, headers)
    return answer


WRONG_ANSWERS = {
    "another model answered": (_variant(lambda s, p, h: (s, {**p, "model": "base"}, h)), "model is 'base'"),
    "no token generated": (_variant(lambda s, p, h: (s, {**p, "usage": {**p["usage"], "completion_tokens": 0}}, h)),
                           "usage.completion_tokens is 0"),
    "not a completion": (_variant(lambda s, p, h: (s, {**p, "object": "chat.completion"}, h)), "not 'text_completion'"),
    "no choices": (_variant(lambda s, p, h: (s, {**p, "choices": []}, h)), "expected one choice"),
    "not from a lorafleet replica": (_variant(lambda s, p, h: (s, p, {})), "no x-lorafleet-replica header"),
    "unauthorized": (_variant(lambda s, p, h: (401, {"error": {"message": "bad key"}}, {})), "HTTP 401"),
    "unknown model": (_variant(lambda s, p, h: (404, {"error": {"message": "model not found"}}, {})), "HTTP 404"),
}


@pytest.mark.parametrize("answer, reason", WRONG_ANSWERS.values(), ids=WRONG_ANSWERS.keys())
def test_the_hook_fails_naming_what_is_wrong_with_the_answer(serve, answer, reason):
    server = serve(answer)
    result = run_hook(_hook({"auth": {"enabled": False}}), server.url)
    assert result.returncode == 1
    assert reason in result.stderr, result.stderr


def test_the_hook_fails_without_calling_when_the_api_needs_a_key_it_does_not_have(serve):
    server = serve()
    result = run_hook(_hook(), server.url)  # auth on by default, no tests.apiKeySecret
    assert result.returncode == 1
    assert "set tests.apiKeySecret" in result.stderr
    assert server.requests == []


def test_the_hook_retries_while_the_fleet_sheds_load_then_checks_the_answer(serve):
    calls = []

    def busy_then_good(body):
        calls.append(body)
        if len(calls) == 1:
            return 503, {"error": {"message": "overloaded"}}, {"Retry-After": "1"}
        return good_answer(body)

    server = serve(busy_then_good)
    pod = _hook({"auth": {"enabled": False}})
    result = run_hook(pod, server.url)
    assert result.returncode == 0, result.stderr
    assert len(server.requests) == 2 and "attempt 1/6: HTTP 503" in result.stderr
    assert "retrying in 1s" in result.stderr  # the 503's Retry-After


def test_no_hook_when_tests_are_disabled():
    assert render_chart({"tests": {"enabled": False}}).of_kind("Pod") == []
