"""The server's per-request limits (`server.limits`), checked at the ingress before any
engine sees the request, and the token reservation a request makes against its key's
tokens per minute.

Prompt tokens are counted with the base model's own tokenizer the way vLLM counts
them (completions: the prompt with special tokens; chat: the chat template rendered,
then tokenized without adding special tokens again), so "prompt too long" is a 400
naming the limit before generation, and the reservation matches what the engine will
report as `usage.prompt_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deployments.errors import InvalidRequest
from deployments.engine.protocol import Endpoint

_MAX_TOKEN_KEYS = {Endpoint.COMPLETIONS: ("max_tokens",), Endpoint.CHAT: ("max_tokens", "max_completion_tokens")}


class PromptCounter:
    """Counts prompt tokens with a Hugging Face tokenizer (`load` reads it from the base
    model's source, as the engine does)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, source: str) -> "PromptCounter":
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(source))

    def __call__(self, body: dict, endpoint: Endpoint) -> list[int]:
        """Tokens of each prompt of the request (a completions request may batch several)."""
        if endpoint is Endpoint.CHAT:
            messages = [_text_message(m) for m in body.get("messages") or []]
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # noqa: BLE001 - a template that rejects the messages: count their text
                text = "\n".join(str(m.get("content") or "") for m in messages)
            return [len(self.tokenizer(text, add_special_tokens=False)["input_ids"])]
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts: list = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return [len(prompt)]  # one prompt given as token ids
        else:
            prompts = list(prompt or [])
        return [len(p) if isinstance(p, list) else len(self.tokenizer(str(p))["input_ids"]) for p in prompts]


def _text_message(message: dict) -> dict:
    """A chat message with list-of-parts content joined into text, as vLLM renders it."""
    content = message.get("content")
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return {**message, "content": "\n".join(parts)}
    return message


@dataclass(frozen=True)
class Admission:
    """A request as the ingress will send it, and the tokens it may use at most."""

    body: dict
    max_tokens_reserved: int


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
    per prompt, its tokens plus n x max_tokens."""
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, int) and not isinstance(n, bool) and n > max_n:
        raise InvalidRequest(f"`n` is {n}, above this server's limit of {max_n} (server.limits.max_n).", param="n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1

    keys = _MAX_TOKEN_KEYS[endpoint]
    asked = [body[k] for k in keys if isinstance(body.get(k), int) and not isinstance(body.get(k), bool)]
    for key in keys:
        value = body.get(key)
        if max_tokens is not None and isinstance(value, int) and not isinstance(value, bool) and value > max_tokens:
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
    return Admission(body, reserved)
