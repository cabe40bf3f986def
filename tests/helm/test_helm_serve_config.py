"""serveConfigV2: the project's own config schema and app builder accept what the chart renders.

Building a Serve application is pure (`Deployment.options().bind()` records a graph), so
these tests import `deployments.app.build_app` and call it without a Ray cluster. Ray's
auto-connect is switched off for them: if anything in the build tried to reach Ray, the
test fails instead of quietly starting a local cluster.
"""

from __future__ import annotations

import pytest
import yaml
from ray._common.utils import import_attr
from ray.serve.schema import ServeDeploySchema

from tests.helm.rendering import CHART, VALUE_SETS, ci_values, render_chart, selects_postgres
from tests.helm.serve_build import deployment_infos_after_overrides as _deployment_infos_after_overrides
from deployments.app import APP_NAME, build_app
from deployments.config import ConfigError, LorafleetConfig, parse_config

IMPORT_PATH = "deployments.app:build_app"

def test_serve_config_names_the_one_application_builder(render, value_set):
    _, values = value_set
    (app,) = render(values).serve_config["applications"]
    assert app["name"] == APP_NAME
    assert app["import_path"] == IMPORT_PATH
    assert app["route_prefix"] == "/"
    assert import_attr(IMPORT_PATH) is build_app


@pytest.mark.parametrize("values", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_serve_config_args_pass_the_project_config_schema(values):
    (app,) = render_chart(values).serve_config["applications"]
    config = parse_config(app["args"])
    assert isinstance(config, LorafleetConfig)
    assert config.server.host == "0.0.0.0"


@pytest.mark.parametrize("name", [n for n, v in VALUE_SETS.items() if selects_postgres(v)])
def test_a_postgres_ledger_reads_its_dsn_from_the_environment_the_chart_fills(name):
    (app,) = render_chart(VALUE_SETS[name]).serve_config["applications"]
    usage = parse_config(app["args"]).server.usage
    assert usage.backend == "postgres" and usage.postgres_dsn_env == "LORAFLEET_USAGE_POSTGRES_DSN"


def test_serve_config_args_are_the_lorafleet_values_verbatim(render):
    values = ci_values("pvc-values.yaml")
    (app,) = render(values).serve_config["applications"]
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())["lorafleet"]
    assert app["args"]["model"]["source"] == "/mnt/model/llama-3.1-8b-instruct"
    # Helm drops null defaults (the schema's default, None, applies).
    assert app["args"]["engine"] == {k: v for k, v in chart_defaults["engine"].items() if v is not None}
    assert set(app["args"]) == set(LorafleetConfig.model_fields) - {"models"} | {"model"}  # one base, as `model:`


def test_large_numbers_survive_rendering_as_numbers(render):
    (app,) = render({"lorafleet": {"server": {"max_request_bytes": 123456789012, "request_timeout_s": 1e6}}}).serve_config["applications"]
    assert app["args"]["server"]["max_request_bytes"] == 123456789012
    assert parse_config(app["args"]).server.request_timeout_s == 1e6


def test_serve_config_passes_ray_serves_own_schema(render, value_set):
    _, values = value_set
    parsed = ServeDeploySchema.model_validate(render(values).serve_config)
    assert parsed.http_options.host == "0.0.0.0"


def test_http_options_follow_the_lorafleet_server_section(render):
    config = render({"lorafleet": {"server": {"port": 9000, "request_timeout_s": 120}}}).serve_config
    assert config["http_options"] == {"host": "0.0.0.0", "port": 9000, "request_timeout_s": 120}


@pytest.mark.parametrize("values", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_the_named_application_builds_without_starting_ray(values, no_ray_auto_connect):
    (app,) = render_chart(values).serve_config["applications"]
    application = import_attr(app["import_path"])(app["args"])
    assert type(application).__name__ == "Application"


def test_engine_replicas_keep_the_configured_count_without_serve_autoscaling(render, no_ray_auto_connect):
    config = render(ci_values("default-values.yaml")).serve_config
    overrides = {d["name"]: d for d in config["applications"][0]["deployments"]}
    assert "autoscaling_config" not in overrides["EngineReplica"] and "num_replicas" not in overrides["EngineReplica"]
    infos = _deployment_infos_after_overrides(config)
    engine = infos["EngineReplica"].deployment_config
    assert engine.num_replicas == 2 and engine.autoscaling_config is None
    assert infos["EngineReplica"].replica_config.ray_actor_options["num_gpus"] == 1


def test_serve_autoscaling_override_reaches_the_engine_replica_deployment(render, no_ray_auto_connect):
    config = render(ci_values("autoscaling-values.yaml")).serve_config
    override = config["applications"][0]["deployments"][0]
    assert override["name"] == "EngineReplica"
    infos = _deployment_infos_after_overrides(config)
    engine = infos["EngineReplica"].deployment_config
    assert engine.num_replicas is None
    scaling = engine.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (1, 12, 96)
    assert (scaling.upscale_delay_s, scaling.downscale_delay_s) == (30, 600)
    # The override changes the replica count only: resources and the ingress are the builder's.
    assert infos["EngineReplica"].replica_config.ray_actor_options["num_gpus"] == 1
    assert infos["Ingress"].deployment_config.autoscaling_config is None


def test_override_step_refuses_a_deployment_the_builder_does_not_create(render, no_ray_auto_connect):
    # Guards the check above: a misspelt deployment name must not pass silently.
    config = render(ci_values("autoscaling-values.yaml")).serve_config
    config["applications"][0]["deployments"][0]["name"] = "EngineReplicas"
    with pytest.raises(ValueError, match="does not exist"):
        _deployment_infos_after_overrides(config)
