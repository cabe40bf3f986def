"""ci/production-values.yaml (issue 16, "Expected"): a production install using every
production feature of the chart, rendered and validated the way each object is admitted,
and shown in the chart README (kept identical by sync_chart.py)."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate

from tests.helm.pod_security import pod_violations
from tests.helm.promtool import check_rules
from tests.helm.rendering import CHART, ci_values, load_sync_tool, render_chart

PRODUCTION = ci_values("production-values.yaml")
CORE_API_GROUPS = ("v1", "networking.k8s.io/v1", "apps/v1", "policy/v1")
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_production_values_use_every_production_feature():
    rendered = render_chart(PRODUCTION)
    spec = rendered.rayservice["spec"]
    cluster = spec["rayClusterConfig"]
    (group,) = rendered.worker_groups
    pod = group["template"]["spec"]
    (worker,) = pod["containers"]
    (app,) = rendered.serve_config["applications"]
    env = _env(worker)
    # GPU workers, both autoscalers
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1 and pod["runtimeClassName"] == "nvidia"
    assert cluster["enableInTreeAutoscaling"] is True
    assert app["deployments"][0]["autoscaling_config"]["max_replicas"] == 6
    # S3 adapter store with credentials from a Secret; the model's downloads on a shared cache
    assert app["args"]["adapters"]["uri"].startswith("s3://")
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "lorafleet-s3"
    assert {c["metadata"]["name"] for c in rendered.of_kind("PersistentVolumeClaim")} == {"fleet-lorafleet-model-cache"}
    # API keys from a Secret, TLS ingress, helm test with its own key
    assert app["args"]["server"]["auth"] == {"enabled": True, "keys_file": "/etc/lorafleet/auth/keys.yaml"}
    assert rendered.one("Ingress")["spec"]["tls"] == [{"secretName": "llm-example-tls", "hosts": ["llm.example.com"]}]
    assert "LORAFLEET_API_KEY" in _env(rendered.one("Pod")["spec"]["containers"][0])
    # usage ledger on PostgreSQL behind two ingress replicas
    assert app["args"]["server"]["usage"]["backend"] == "postgres"
    assert app["args"]["deployment"]["ingress_replicas"] == 2
    assert env["LORAFLEET_USAGE_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "lorafleet-ledger-dsn", "key": "dsn"}
    # monitoring
    assert rendered.one("PodMonitor") and rendered.one("PrometheusRule")
    assert {cm["metadata"]["namespace"] for cm in rendered.of_kind("ConfigMap")} == {"monitoring"}
    # availability and hardening
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"].startswith("redis-master.")
    assert spec["rayClusterDeletionDelaySeconds"] == 120
    assert worker["lifecycle"]["preStop"] and pod["terminationGracePeriodSeconds"] == 330
    assert len(rendered.of_kind("PodDisruptionBudget")) == 2 and len(rendered.of_kind("NetworkPolicy")) == 2
    assert rendered.one("ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["lorafleet.dev/worker-group"] == "a100"


def test_production_values_are_admitted_everywhere(validate_rayservice, tmp_path):
    report = helm.lint(CHART, PRODUCTION, strict=True)
    assert [m for m in report["messages"] if m["severity"] >= 2] == [] and report["errors"] == []
    rendered = render_chart(PRODUCTION)
    validate_rayservice(rendered.rayservice)
    for obj in rendered.objects:
        if obj["apiVersion"] in CORE_API_GROUPS:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)
    result = check_rules(tmp_path, rendered.one("PrometheusRule")["spec"]["groups"])
    assert result.returncode == 0, result.stdout + result.stderr
    cluster = rendered.rayservice["spec"]["rayClusterConfig"]
    sidecar = [{"name": "autoscaler", "securityContext": cluster["autoscalerOptions"]["securityContext"]}]
    violations = pod_violations(rendered.head_group["template"]["spec"], "head", sidecar)
    for group in rendered.worker_groups:
        violations += pod_violations(group["template"]["spec"], group["groupName"])
    violations += pod_violations(rendered.one("Pod")["spec"], "helm-test")
    assert violations == []


def test_the_chart_readme_shows_the_production_values_file_verbatim():
    readme = (CHART / "README.md").read_text()
    tool = load_sync_tool()
    begin, end = readme.index(tool.PRODUCTION_BEGIN), readme.index(tool.PRODUCTION_END)
    shown = readme[begin:end]
    assert (CHART / "ci" / "production-values.yaml").read_text() in shown
