"""Core Kubernetes objects: valid for Kubernetes 1.30 and the newest version
kubernetes-validate knows, in strict mode (unknown fields are errors)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest

from tests.helm.rendering import RELEASE, ci_values, merged, render_chart

K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
CORE_API_GROUPS = ("v1", "networking.k8s.io/v1", "apps/v1", "policy/v1")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _core_objects(rendered) -> list[dict]:
    return [o for o in rendered.objects if o["apiVersion"] in CORE_API_GROUPS]


def _pod_templates(rendered) -> list[dict]:
    """The RayService's pod templates as v1 PodTemplates, so Kubernetes' own pod schema
    checks them too (KubeRay's CRD embeds a copy of it)."""
    pods = [rendered.head_group["template"], *(g["template"] for g in rendered.worker_groups)]
    return [{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"pod-{i}"}, "template": p}
            for i, p in enumerate(pods)]


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_core_objects_validate_strictly(render, value_set, k8s_version):
    _, values = value_set
    rendered = render(values)
    objects = _core_objects(rendered) + _pod_templates(rendered)
    assert objects, "nothing to validate"
    for obj in objects:
        checked_against = kubernetes_validate.validate(obj, k8s_version, strict=True)
        assert checked_against == ".".join(k8s_version.split(".")[:2])
        assert DNS_1123_SUBDOMAIN.match(obj["metadata"]["name"]) and len(obj["metadata"]["name"]) <= 63


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_strict_validation_rejects_an_unknown_field_in_a_pod_template(render, k8s_version):
    (pod, *_) = _pod_templates(render())
    pod["template"]["spec"]["containers"][0]["volumeMount"] = []  # typo of volumeMounts
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, k8s_version, strict=True)


def test_every_rendered_kind_is_validated_by_some_test(render):
    # New kinds must not slip past validation: core kinds go through kubernetes-validate,
    # RayService through the KubeRay CRD schema, PodMonitor through the checks below,
    # PrometheusRule through promtool (test_helm_alert_rules.py).
    rendered = render(merged(ci_values("production-values.yaml"),
                             {"usageLedger": {"postgres": {"existingSecret": "", "bundled": {"enabled": True}}}}))
    kinds = {(o["apiVersion"], o["kind"]) for o in rendered.objects}
    others = {k for k in kinds if k[0] not in CORE_API_GROUPS}
    assert others == {("ray.io/v1", "RayService"), ("monitoring.coreos.com/v1", "PodMonitor"),
                      ("monitoring.coreos.com/v1", "PrometheusRule")}
    assert {"StatefulSet", "Service", "Secret", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount", "Pod",
            "PersistentVolumeClaim", "Ingress", "ConfigMap"} <= {k for _, k in kinds}
    for obj in rendered.objects:  # every core kind, bundled PostgreSQL included
        if obj["apiVersion"] in CORE_API_GROUPS:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)


def test_ingress_routes_to_kuberays_serve_service_on_the_api_port(render):
    rendered = render(merged(ci_values("autoscaling-values.yaml"), {"lorafleet": {"server": {"port": 9000}}}))
    ingress = rendered.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "llm-example-tls", "hosts": ["llm.example.com"]}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "llm.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{rendered.rayservice['metadata']['name']}-serve-svc", "port": {"number": 9000}}


def test_no_ingress_unless_enabled(render):
    assert render().of_kind("Ingress") == []


def test_pod_monitor_scrapes_the_metrics_port_of_the_release_pods(render):
    rendered = render(ci_values("autoscaling-values.yaml"))
    monitor = rendered.one("PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["llm"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "lorafleet", "app.kubernetes.io/instance": RELEASE}


def test_no_pod_monitor_unless_enabled(render):
    assert render().of_kind("PodMonitor") == []


def _dashboard(title: str) -> str:
    return json.dumps({"title": title, "panels": [], "schemaVersion": 39})


def _without_dashboards(chart: Path) -> None:
    """The chart ships the repository's dashboards: start these tests from none."""
    for old in (chart / "dashboards").glob("*.json"):
        old.unlink()


def test_renders_one_configmap_per_dashboard_labelled_for_the_grafana_sidecar(chart_copy):
    _without_dashboards(chart_copy)
    for name in ("lorafleet-overview.json", "Adapter_Residency.json"):
        (chart_copy / "dashboards" / name).write_text(_dashboard(name))
    rendered = render_chart(chart_dir=chart_copy)
    maps = {m["metadata"]["name"]: m for m in rendered.of_kind("ConfigMap")}
    assert set(maps) == {f"{RELEASE}-lorafleet-dashboard-lorafleet-overview", f"{RELEASE}-lorafleet-dashboard-adapter-residency"}
    for cm in maps.values():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "lorafleet"
        ((key, body),) = cm["data"].items()
        assert json.loads(body)["title"] == key
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(cm, version, strict=True)


def test_dashboard_label_folder_and_namespace_follow_values(chart_copy):
    _without_dashboards(chart_copy)
    (chart_copy / "dashboards" / "a.json").write_text(_dashboard("a"))
    values = {"monitoring": {"dashboards": {"label": "grafana_dashboard_lf", "labelValue": "yes", "folder": "", "namespace": "monitoring"}}}
    (cm,) = render_chart(values, chart_dir=chart_copy).of_kind("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard_lf"] == "yes"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert "annotations" not in cm["metadata"]


def test_renders_no_dashboards_when_the_chart_has_none_or_they_are_disabled(chart_copy):
    _without_dashboards(chart_copy)
    assert render_chart(chart_dir=chart_copy).of_kind("ConfigMap") == []
    (chart_copy / "dashboards" / "a.json").write_text(_dashboard("a"))
    assert render_chart({"monitoring": {"dashboards": {"enabled": False}}}, chart_dir=chart_copy).of_kind("ConfigMap") == []
