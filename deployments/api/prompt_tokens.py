"""Count a request's prompt tokens at the ingress the way the engine will.

The count feeds `server.limits.max_prompt_tokens` (a 400 before generation) and the
token reservation against a key's tokens per minute, so it must match what vLLM
reports as `usage.prompt_tokens`: completions tokenize the prompt with special tokens;
chat renders the chat template with everything vLLM passes to it (the messages, and
`tools`, `documents`, `add_generation_prompt`, `continue_final_message` and the
request's `chat_template_kwargs` filtered to what the template accepts, by vLLM's own
filter), then tokenizes without adding special tokens again. A tool schema or a
document costs prompt tokens like any message, so a request cannot hide a long prompt
in them.
"""

from __future__ import annotations

from typing import Any

from deployments.engine.protocol import Endpoint


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
            return [len(self.tokenizer(self._render_chat(body), add_special_tokens=False)["input_ids"])]
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts: list = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return [len(prompt)]  # one prompt given as token ids
        else:
            prompts = list(prompt or [])
        return [len(p) if isinstance(p, list) else len(self.tokenizer(str(p))["input_ids"]) for p in prompts]

    def _render_chat(self, body: dict) -> str:
        messages = [_text_message(m) for m in body.get("messages") or [] if isinstance(m, dict)]
        tools = body.get("tools") if isinstance(body.get("tools"), list) else None
        extra = {
            "add_generation_prompt": body.get("add_generation_prompt", True),
            "continue_final_message": body.get("continue_final_message", False),
            "documents": body.get("documents"),
        }
        user = body.get("chat_template_kwargs")
        if isinstance(user, dict):
            extra = {**user, **extra}
        template = getattr(self.tokenizer, "chat_template", None)
        if template:
            extra = _accepted_kwargs(self.tokenizer, template, extra)
        try:
            return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **extra)
        except Exception:  # noqa: BLE001 - a template that rejects the request: vLLM answers it; count the text
            parts = [str(m.get("content") or "") for m in messages]
            parts += [str(tools or ""), str(body.get("documents") or "")]
            return "\n".join(parts)


def _accepted_kwargs(tokenizer: Any, template: str, kwargs: dict) -> dict:
    """vLLM's own filter of chat-template kwargs (what the template declares, plus the
    standard Hugging Face parameters), so the ingress renders what the engine renders."""
    from vllm.renderers.hf import resolve_chat_template_kwargs

    safe = {k: v for k, v in kwargs.items() if k not in ("chat_template", "tokenize")}
    return resolve_chat_template_kwargs(tokenizer, template, safe, raise_on_unexpected=False)


def _text_message(message: dict) -> dict:
    """A chat message with list-of-parts content joined into text, as vLLM renders it."""
    content = message.get("content")
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return {**message, "content": "\n".join(parts)}
    return message
