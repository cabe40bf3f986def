"""OpenAPI descriptions of the OpenAI endpoints the ingress serves.

The completion endpoints read the raw body on purpose (size limit first, then JSON,
then vLLM's own protocol models, so every failure becomes an OpenAI-shaped error
naming the parameter). FastAPI therefore cannot infer a request schema, and
/openapi.json would show a body-less POST: useless to clients and to schema-driven
fuzzers. These schemas document the commonly used fields; the server stays as
permissive as vLLM (`additionalProperties: true`: every other vLLM sampling
parameter is accepted and checked by vLLM's models).
"""

from __future__ import annotations

_SAMPLING = {
    "max_tokens": {
        "type": ["integer", "null"], "minimum": 0,
        "description": "Tokens to generate; at least 1 (0 only with `echo`), at most the model's context length.",
    },
    "temperature": {"type": ["number", "null"], "minimum": 0, "description": "Sampling temperature; 0 is greedy."},
    "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
    "n": {"type": ["integer", "null"], "minimum": 1, "description": "Choices to return."},
    "stream": {"type": ["boolean", "null"], "description": "Stream Server-Sent Events, ending with `data: [DONE]`."},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
    "seed": {"type": ["integer", "null"]},
    "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
    "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
    "user": {"type": ["string", "null"]},
}

_MODEL = {"type": "string", "minLength": 1, "description": "The base model's name or an adapter's name (see GET /v1/models)."}

COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "prompt"],
    "additionalProperties": True,
    "properties": {
        "model": _MODEL,
        "prompt": {
            "description": "Text, a batch of texts, token ids, or a batch of token-id lists.",
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
                {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
                {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}, "minItems": 1},
            ],
        },
        "echo": {"type": ["boolean", "null"], "description": "Return the prompt with the completion."},
        "logprobs": {"type": ["integer", "null"], "minimum": 0, "description": "Log-probabilities of the top tokens."},
        **_SAMPLING,
    },
}

_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "additionalProperties": True,
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
        "content": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                    },
                },
            ]
        },
    },
}

CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": True,
    "properties": {
        "model": _MODEL,
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
        "logprobs": {"type": ["boolean", "null"]},
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0},
        **_SAMPLING,
    },
}

ERROR_RESPONSE = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_RESPONSE}}}


def route_docs(request_schema: dict) -> dict:
    """Keyword arguments for a FastAPI route decorator: the request body and every
    response the endpoint can give (errors in the OpenAI shape)."""
    return {
        "openapi_extra": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}}
        },
        "responses": {
            200: {
                "description": "The completion: JSON, or Server-Sent Events when `stream` is true.",
                "content": {"application/json": {}, "text/event-stream": {}},
            },
            400: _error("Invalid request: the error names the parameter at fault."),
            404: _error("No servable model of that name."),
            413: _error("The body is larger than `server.max_request_bytes`."),
            503: _error("Overloaded or an engine replica died: retry after `Retry-After` seconds."),
        },
    }
