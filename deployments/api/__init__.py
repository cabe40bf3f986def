"""The OpenAI-compatible surface, independent of Ray.

    request_checks.py  a request body checked with vLLM's own protocol models
    http_errors.py     typed errors -> OpenAI-style HTTP answers, in one place
    openapi.py         request schemas for /docs and Schemathesis
    registry.py        the adapter registry's routes (/v1/adapters)

May import `adapters/`, `tenancy/`, `engine.protocol`, `deployments.config` and
`deployments.errors`; never `ray`.
"""
