"""The Ray Serve deployments and the request router: the only code that imports `ray.serve`.

    ingress.py         the OpenAI-compatible HTTP ingress (FastAPI under @serve.ingress)
    engine_replica.py  one engine per replica: stats to routers and the controller, health
    controller.py      the fleet controller: replica stats in, placement plans out
    router.py          the adapter-aware RequestRouter (glue over cluster.routing)

Each is glue: the policy lives in `cluster/`, the engine in `engine/`, the request rules
in `api/` and `tenancy/`.
"""
