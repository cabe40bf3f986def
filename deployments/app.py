"""`build_app(config) -> Application`: the one builder.

Used by `lorafleet serve`, by the tests, and by a RayService's `serveConfigV2`
(`import_path: deployments.app:build_app`, `args:` = the config), so every way of
running lorafleet deploys the same graph from the same validated schema.

The graph: one ingress; one engine deployment per base model (`EngineReplica` for the
first, `EngineReplica-<slug>` for the others), each with its own request router (Ray
Serve makes one per deployment handle) and its own replica count and resources (a
tensor-parallel base gets a placement group per replica, `engine.resources`); one
fleet controller, which keeps one placement loop per base (replicas say which base
they serve). The ingress maps a request's `model` to (base, adapter) and calls that
base's deployment, so an adapter only ever reaches its own base's engines.
"""

from __future__ import annotations

import dataclasses
import logging

from ray.serve import Application
from ray.serve.config import BackpressureConfig, RequestRouterConfig
from ray.serve.schema import LoggingConfig

from deployments.config import LorafleetConfig, parse_config
from deployments.tenancy.admission import ingress_admission_limit
from deployments.serve.autoscaling_policy import POLICY_PATH
from deployments.serve.controller import FleetController
from deployments.serve.engine_replica import EngineReplica
from deployments.serve.ingress import Ingress
from deployments.serve.router import ROUTER_CLASS_PATH
from deployments.engine.base import VLLM_ENGINE
from deployments.engine.resources import replica_resources
from deployments.engine.vllm_engine import engine_environment

APP_NAME = "lorafleet"
INGRESS_HEADROOM = 64  # ingress slots beyond twice its admission cap: refusals and cheap endpoints
SHED_WITH_RETRY_AFTER = BackpressureConfig(status_code=503, retry_after_s=1)
# Every call the fleet controller gets is periodic (each replica's stats report every
# second, each ingress's long poll for aborted usage): an access-log line per call
# filled the logs (and, streamed to the driver, the terminal) with `CALL report OK`.
# Requests keep their access log on the ingress and the engine replicas.
CONTROLLER_LOGGING = LoggingConfig(enable_access_log=False)
# How often a stopping replica checks whether its in-flight requests are done (Serve's
# default, 2 s, made every stop at least 2 s longer than its requests needed).
DRAIN_POLL_S = 0.25

logger = logging.getLogger(__name__)


def request_router_config(view: LorafleetConfig) -> RequestRouterConfig:
    """One base's router (`view` = `config.for_base(name)`). `pow2` is Ray Serve's own
    default router, untouched (the honest baseline); every other policy runs in
    lorafleet's router over the same replica stats."""
    routing = view.routing
    if routing.policy == "pow2":
        return RequestRouterConfig(request_routing_stats_period_s=routing.stats_period_s)
    return RequestRouterConfig(
        request_router_class=ROUTER_CLASS_PATH,
        request_router_kwargs={"policy": routing.policy, "settings": routing.settings.model_dump(),
                               "base": view.model.served_name, "peers": view.deployment.ingress_replicas},
        request_routing_stats_period_s=routing.stats_period_s,
    )


def autoscaling_for_controller(config: LorafleetConfig) -> dict[str, dict]:
    """What the fleet controller needs to size each base's engine deployment: base ->
    {settings, profile, initial}, for the bases with autoscaling on (none: fixed sizes)."""
    out = {}
    for name, view in config.bases().items():
        if view.autoscaling.enabled:
            out[name] = {"settings": view.autoscaling.settings.model_dump(mode="json"),
                         "profile": dataclasses.asdict(view.replica_profile()),
                         "initial": view.deployment.num_replicas}
    return out


def replica_count_options(view: LorafleetConfig) -> dict:
    """One base's engine deployment size (`view` = `config.for_base(name)`): fixed, or
    Ray Serve autoscaling that follows the fleet controller's decision
    (deployments.serve.autoscaling_policy). Ray's own delays and factors stay neutral:
    the decision applies lorafleet's; the look-back spans two stats reports, so a new
    target reaches Ray within seconds."""
    d = view.deployment
    if not view.autoscaling.enabled:
        return {"num_replicas": d.num_replicas}
    s = view.autoscaling.settings
    return {
        "autoscaling_config": {
            "min_replicas": s.min_replicas,
            "max_replicas": s.max_replicas,
            "initial_replicas": d.num_replicas,
            "upscale_delay_s": 0.0,
            "downscale_delay_s": 0.0,
            "look_back_period_s": 2 * d.stats_report_period_s,
            "metrics_interval_s": d.stats_report_period_s,
            "policy": {"policy_function": POLICY_PATH},
        },
    }


def engine_deployment_options(config: LorafleetConfig, served_name: str) -> dict:
    """The Ray Serve options of one base's engine deployment: its name, replica count
    (or autoscaling), limits, router, drain and resources (a placement group for a
    parallel engine)."""
    view = config.for_base(served_name)
    d = view.deployment
    resources = replica_resources(view)
    resources["ray_actor_options"]["runtime_env"] = {"env_vars": engine_environment(view)}
    return dict(
        name=config.engine_deployment_name(served_name),
        **replica_count_options(view),
        max_ongoing_requests=view.replica_max_ongoing_requests(),
        max_queued_requests=d.max_queued_requests,
        backpressure_config=SHED_WITH_RETRY_AFTER,
        health_check_period_s=d.health_check_period_s,
        health_check_timeout_s=max(30.0, 3 * d.health_check_period_s),
        graceful_shutdown_timeout_s=d.drain_timeout_s,
        graceful_shutdown_wait_loop_s=DRAIN_POLL_S,
        request_router_config=request_router_config(view),
        **resources,
    )


def ingress_admission_total(config: LorafleetConfig) -> int:
    """What one ingress replica admits at once over every base (each base has its own gate)."""
    return sum(
        ingress_admission_limit(
            configured=config.deployment.ingress_max_ongoing_requests,
            num_replicas=view.max_engine_replicas(),
            max_ongoing_requests=view.replica_max_ongoing_requests(),
            max_queued_requests=view.deployment.max_queued_requests,
        )
        for view in config.bases().values()
    )


def build_app(config: LorafleetConfig | dict) -> Application:
    """The application graph with vLLM engines (Ray calls builders with one argument)."""
    return build_graph(config)


def build_graph(config: LorafleetConfig | dict, *, engine_factory: str = VLLM_ENGINE) -> Application:
    """The application graph: ingress -> one engine deployment per base (each with the
    adapter-aware router) and the fleet controller. `engine_factory` is the engine each
    replica runs (an import path; the fast test tier passes a fake engine, everything
    else runs vLLM)."""
    if not isinstance(config, LorafleetConfig):
        config = parse_config(config)
    d = config.deployment
    placement = {
        name: view.placement.settings.model_dump(mode="json") if view.placement.enabled else None
        for name, view in config.bases().items()
    }
    controller = FleetController.options(ray_actor_options={"num_cpus": 0}, logging_config=CONTROLLER_LOGGING).bind(
        d.stats_report_period_s, placement, autoscaling_for_controller(config))
    engines = {
        name: EngineReplica.options(**engine_deployment_options(config, name)).bind(
            view.model_dump(mode="json"), controller, engine_factory)
        for name, view in config.bases().items()
    }
    admitted = ingress_admission_total(config)
    for warning in config.batching_warnings():
        logger.warning(warning)
    return Ingress.options(
        num_replicas=d.ingress_replicas,
        # Far more room than the admission cap: the ingress itself answers the overflow
        # at once with an OpenAI-shaped 503 (and /health, /v1/models stay reachable), so
        # Ray's HTTP proxy never becomes the queue. The proxy's own queue for the
        # ingress is a small last resort (Ray answers 503 + Retry-After, in plain text).
        max_ongoing_requests=2 * admitted + INGRESS_HEADROOM,
        max_queued_requests=INGRESS_HEADROOM,
        backpressure_config=SHED_WITH_RETRY_AFTER,  # the proxy's plain-text 503 still tells clients when to retry
        graceful_shutdown_timeout_s=d.drain_timeout_s,
        graceful_shutdown_wait_loop_s=DRAIN_POLL_S,
        ray_actor_options={"num_cpus": d.ingress_cpus},
    ).bind(config.model_dump(mode="json"), engines, controller)
