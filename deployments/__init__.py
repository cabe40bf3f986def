"""The serving layer: lorafleet on Ray Serve and vLLM, one subpackage per job.

    app.py            build_app(config): the one builder (CLI, tests, Helm's serveConfigV2)
    config.py         the one config schema (pydantic, strict, every field described)
    errors.py         typed serving errors (request, caller, capacity); pure
    adapter_store.py  the adapter store a config names, checked against its base models
    model_files.py    a base model's files on this node (fetched once per node from S3 or a hub)
    serve/            the Ray Serve deployments (ingress, engine replica, fleet controller)
                      and the request router: the only importers of `ray.serve`
    engine/           the vLLM engine behind an interface, the ingress<->replica protocol,
                      engine lifetime, the vLLM plugin (no Ray Serve)
    api/              the OpenAI surface: request checks, errors -> HTTP, OpenAPI docs,
                      the adapter registry's routes (no Ray)
    tenancy/          keys, access rules, limits, admission, usage ledger and report:
                      pure and clock-injected (no Ray, no FastAPI)
    observability/    metrics recorded with Ray's metrics API
    cli/              the `lorafleet` command

Imports point down: `serve/` may import every sibling; `api/` may import `tenancy/`,
`engine.protocol`, `observability/`; `tenancy/` and `engine/` import neither `serve/`
nor `api/`; nothing here is imported by `adapters/`, `cluster/` or `factory/`
(tests/unit/test_layers.py enforces it).
"""
