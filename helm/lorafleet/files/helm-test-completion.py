"""`helm test`: send one completion through KubeRay's serve Service and check the answer.

Run by the chart's test pod with the serving image's Python (standard library only):

    python -c "<this file>"

Environment: LORAFLEET_URL (http://<fullname>-serve-svc.<namespace>.svc:<port>),
LORAFLEET_MODEL, LORAFLEET_PROMPT, LORAFLEET_MAX_TOKENS, LORAFLEET_AUTH ("1" while the
API needs keys) and LORAFLEET_API_KEY (from `tests.apiKeySecret`). Exits 0 for a well-formed completion of that model with at least one
generated token, answered by a lorafleet engine replica; 1 naming what was wrong otherwise.
Connection errors and 503s (a fleet still starting, or shedding load) are retried a few
times, after the 503's Retry-After; any other status is an answer, and fails at once.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

ATTEMPTS = 6
RETRY_AFTER_S = 5.0
TIMEOUT_S = 120.0


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def retry_after(header: str | None) -> float:
    """Seconds a 503 asks to wait (lorafleet sends `Retry-After`), within 1..30."""
    try:
        return min(max(float(header), 1.0), 30.0)
    except (TypeError, ValueError):
        return RETRY_AFTER_S


def request(url: str, body: dict, api_key: str) -> tuple[dict, dict]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode()
    last = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=TIMEOUT_S) as response:
                return json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as err:
            text = err.read()[:500].decode(errors="replace")
            if err.code != 503:
                fail(f"POST {url} answered HTTP {err.code}: {text}")
            last = f"HTTP 503: {text}"
            wait_s = retry_after(err.headers.get("Retry-After"))
        except (urllib.error.URLError, OSError) as err:
            last = f"{type(err).__name__}: {err}"
            wait_s = RETRY_AFTER_S
        except json.JSONDecodeError as err:
            fail(f"POST {url} answered something that is not JSON: {err}")
        print(f"attempt {attempt}/{ATTEMPTS}: {last}; retrying in {wait_s:.0f}s", file=sys.stderr)
        time.sleep(wait_s)
    fail(f"POST {url} got no answer after {ATTEMPTS} attempts: {last}")


def problems(payload: dict, headers: dict, model: str, max_tokens: int) -> list[str]:
    """What is wrong with a completion answer (empty list: nothing)."""
    found = []
    if payload.get("object") != "text_completion":
        found.append(f"object is {payload.get('object')!r}, not 'text_completion'")
    if payload.get("model") != model:
        found.append(f"model is {payload.get('model')!r}, not {model!r}")
    choices = payload.get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        found.append(f"expected one choice, got {choices!r}")
    else:
        choice = choices[0]
        if not isinstance(choice.get("text"), str):
            found.append(f"choice text is {choice.get('text')!r}")
        if choice.get("finish_reason") not in ("length", "stop"):
            found.append(f"finish_reason is {choice.get('finish_reason')!r}")
    usage = payload.get("usage") or {}
    generated = usage.get("completion_tokens")
    if not isinstance(generated, int) or not 1 <= generated <= max_tokens:
        found.append(f"usage.completion_tokens is {generated!r}, expected 1..{max_tokens}")
    if not isinstance(usage.get("prompt_tokens"), int) or usage["prompt_tokens"] < 1:
        found.append(f"usage.prompt_tokens is {usage.get('prompt_tokens')!r}")
    if not {k.lower() for k in headers} & {"x-lorafleet-replica"}:
        found.append("no x-lorafleet-replica header: the answer did not come from a lorafleet engine replica")
    return found


def main() -> None:
    base = os.environ["LORAFLEET_URL"].rstrip("/")
    model = os.environ["LORAFLEET_MODEL"]
    max_tokens = int(os.environ["LORAFLEET_MAX_TOKENS"])
    api_key = os.environ.get("LORAFLEET_API_KEY", "")
    if os.environ.get("LORAFLEET_AUTH") == "1" and not api_key:
        fail("the API needs a key (auth.enabled) and the test has none: set tests.apiKeySecret to a Secret "
             "holding one (`lorafleet keys create`), or tests.enabled false")
    body = {"model": model, "prompt": os.environ["LORAFLEET_PROMPT"], "max_tokens": max_tokens, "temperature": 0}
    payload, headers = request(f"{base}/v1/completions", body, api_key)
    found = problems(payload, headers, model, max_tokens)
    if found:
        fail("; ".join(found) + f" (answer: {json.dumps(payload)[:500]})")
    text = payload["choices"][0]["text"]
    print(f"OK: {model} answered {payload['usage']['completion_tokens']} tokens {text!r} "
          f"from replica {headers.get('x-lorafleet-replica') or headers.get('X-Lorafleet-Replica')}")


main()
