"""What the Serve controller deploys from a rendered serveConfigV2, computed offline."""

from __future__ import annotations

from ray._common.utils import import_attr
from ray.serve.schema import ServeDeploySchema


def deployment_infos_after_overrides(serve_config: dict) -> dict:
    """What the Serve controller ends up deploying: Ray's own schema parses the config,
    Ray's builder-calling code builds the application, and Ray's override step applies
    the config's per-deployment options (ray==2.60.0 internals, pinned by pyproject)."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.application_state import override_deployment_info
    from ray.serve._private.build_app import build_app as build_serve_app
    from ray.serve._private.config import DeploymentConfig, ReplicaConfig
    from ray.serve._private.deployment_info import DeploymentInfo

    (app_config,) = ServeDeploySchema.model_validate(serve_config).applications
    app = call_user_app_builder_with_args_if_necessary(import_attr(app_config.import_path), app_config.args)
    built = build_serve_app(app, name=app_config.name)
    infos = {}
    for deployment in built.deployments:
        # Through the same proto round trip the controller's build task uses.
        config = DeploymentConfig.from_proto_bytes(deployment._deployment_config.to_proto_bytes())
        replica = ReplicaConfig.from_proto_bytes(deployment._replica_config.to_proto_bytes(), config.needs_pickle())
        infos[deployment.name] = DeploymentInfo(deployment_config=config, replica_config=replica,
                                                start_time_ms=0, deployer_job_id="offline")
    return override_deployment_info(infos, app_config)
