"""Tokens an engine has produced per request, for requests stopped mid-generation.

A request's tokens are otherwise known only from its final usage, which a request
stopped because its client left never gets. vLLM runs one request as one or more
engine requests (one per prompt, and per choice when n > 1), whose ids carry the
lorafleet request id (the replica sends it as vLLM's `X-Request-Id`). Two events fill
the meter: an engine request that *finished* (vLLM's per-request stats), and one that
is being *aborted* (its prompt length and generated tokens read just before vLLM drops
it). Together they cover every engine request of a stopped lorafleet request.
"""

from __future__ import annotations

import re

_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


class UsageMeter:
    """Produced (prompt, completion) tokens per tracked lorafleet request id."""

    def __init__(self) -> None:
        self._tracked: dict[str, list[int]] = {}

    def track(self, request_id: str) -> None:
        self._tracked[request_id] = [0, 0]

    def forget(self, request_id: str) -> tuple[int, int]:
        counts = self._tracked.pop(request_id, None) or [0, 0]
        return counts[0], counts[1]

    def produced(self, engine_request_id: str, prompt_tokens: int, completion_tokens: int) -> None:
        """One engine request ended (finished or aborted) having produced these tokens."""
        match = _REQUEST_ID.search(engine_request_id or "")
        counts = self._tracked.get(match.group(0)) if match else None
        if counts is not None:
            counts[0] += prompt_tokens
            counts[1] += completion_tokens

    def __len__(self) -> int:
        return len(self._tracked)
