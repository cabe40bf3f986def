"""`build_app(config) -> Application`: the one builder.

Used by `lorafleet serve`, by the tests, and by a RayService's `serveConfigV2`
(`import_path: deployments.app:build_app`, `args:` = the config), so every way of
running lorafleet deploys the same graph from the same validated schema.
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


def request_router_config(config: LorafleetConfig) -> RequestRouterConfig:
    """`pow2` is Ray Serve's own default router, untouched (the honest baseline); every
    other policy runs in lorafleet's router over the same replica stats."""
    routing = config.routing
    if routing.policy == "pow2":
        return RequestRouterConfig(request_routing_stats_period_s=routing.stats_period_s)
    return RequestRouterConfig(
        request_router_class=ROUTER_CLASS_PATH,
        request_router_kwargs={"policy": routing.policy, "settings": routing.settings.model_dump(),
                               "peers": config.deployment.ingress_replicas},
        request_routing_stats_period_s=routing.stats_period_s,
    )


def autoscaling_for_controller(config: LorafleetConfig) -> dict | None:
    """What the fleet controller needs to size the engine deployment (None: fixed size)."""
    if not config.autoscaling.enabled:
        return None
    return {"settings": config.autoscaling.settings.model_dump(mode="json"),
            "profile": dataclasses.asdict(config.replica_profile()),
            "initial": config.deployment.num_replicas}


def replica_count_options(config: LorafleetConfig) -> dict:
    """The engine deployment's size: fixed, or Ray Serve autoscaling that follows the
    fleet controller's decision (deployments.serve.autoscaling_policy). Ray's own
    delays and factors stay neutral: the decision applies lorafleet's; the look-back
    spans two stats reports, so a new target reaches Ray within seconds."""
    d = config.deployment
    if not config.autoscaling.enabled:
        return {"num_replicas": d.num_replicas}
    s = config.autoscaling.settings
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


def build_app(config: LorafleetConfig | dict) -> Application:
    """The application graph with vLLM engines (Ray calls builders with one argument)."""
    return build_graph(config)


def build_graph(config: LorafleetConfig | dict, *, engine_factory: str = VLLM_ENGINE) -> Application:
    """The application graph: ingress -> engine replicas (with the adapter-aware router)
    and the fleet controller. `engine_factory` is the engine each replica runs (an
    import path; the fast test tier passes a fake engine, everything else runs vLLM)."""
    if not isinstance(config, LorafleetConfig):
        config = parse_config(config)
    config_dict = config.model_dump(mode="json")
    d = config.deployment
    placement = config.placement.settings.model_dump(mode="json") if config.placement.enabled else None
    controller = FleetController.options(ray_actor_options={"num_cpus": 0}, logging_config=CONTROLLER_LOGGING).bind(
        d.stats_report_period_s, placement, autoscaling_for_controller(config))
    engine = EngineReplica.options(
        **replica_count_options(config),
        max_ongoing_requests=config.replica_max_ongoing_requests(),
        max_queued_requests=d.max_queued_requests,
        backpressure_config=SHED_WITH_RETRY_AFTER,
        health_check_period_s=d.health_check_period_s,
        health_check_timeout_s=max(30.0, 3 * d.health_check_period_s),
        graceful_shutdown_timeout_s=d.drain_timeout_s,
        graceful_shutdown_wait_loop_s=DRAIN_POLL_S,
        request_router_config=request_router_config(config),
        ray_actor_options={
            "num_cpus": d.replica_cpus,
            "num_gpus": d.replica_gpus,
            "runtime_env": {"env_vars": engine_environment(config)},
        },
    ).bind(config_dict, controller, engine_factory)
    admitted = ingress_admission_limit(
        configured=d.ingress_max_ongoing_requests,
        num_replicas=config.max_engine_replicas(),
        max_ongoing_requests=config.replica_max_ongoing_requests(),
        max_queued_requests=d.max_queued_requests,
    )
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
    ).bind(config_dict, engine, controller)
