"""NetworkPolicies: the API port is open, Ray's ports only within the release (issue 16,
item 3), and `ray.authMode: disabled` only behind them with the dashboard never reachable
from outside the pod network (issue 12, item 10). The rendered policies are evaluated by
tests/helm/netpol.py, which implements the API's semantics: with no policy rendered every
connection below is allowed, so each refusal here proves a policy doing its job."""

from __future__ import annotations

import helm_python as helm
import pytest

from tests.helm.netpol import External, Pod, allows
from tests.helm.rendering import NAMESPACE, RELEASE, VALUE_SETS, render_chart

API, METRICS, GCS, DASHBOARD, CLIENT, DASHBOARD_AGENT, WORKER_PORT = 8000, 8080, 6379, 8265, 10001, 52365, 10123
RAY_PORTS = (GCS, DASHBOARD, CLIENT, DASHBOARD_AGENT, WORKER_PORT)
RELEASE_LABELS = {"app.kubernetes.io/name": "lorafleet", "app.kubernetes.io/instance": RELEASE}
HEAD = Pod(NAMESPACE, {**RELEASE_LABELS, "app.kubernetes.io/component": "head", "ray.io/node-type": "head"}, "10.0.1.1")
WORKER = Pod(NAMESPACE, {**RELEASE_LABELS, "app.kubernetes.io/component": "worker", "lorafleet.dev/worker-group": "gpu"},
             "10.0.1.2")
OPERATOR = Pod("kuberay", {"app.kubernetes.io/name": "kuberay-operator"}, "10.0.2.1")
NEIGHBOUR = Pod(NAMESPACE, {"app": "something-else"}, "10.0.3.1")
OTHER_NAMESPACE = Pod("team-b", {"app": "notebook"}, "10.0.4.1")
OTHER_RELEASE = Pod(NAMESPACE, {**RELEASE_LABELS, "app.kubernetes.io/instance": "other", "app.kubernetes.io/component": "worker"},
                    "10.0.5.1")
TEST_POD = Pod(NAMESPACE, {**RELEASE_LABELS, "app.kubernetes.io/component": "helm-test"}, "10.0.6.1")
INTERNET = External("203.0.113.7")


def _policies(values: dict | None = None) -> list[dict]:
    policies = render_chart(values).of_kind("NetworkPolicy")
    assert policies, "no NetworkPolicy rendered"
    return policies


def test_ray_pods_of_the_release_reach_each_other_on_every_port():
    policies = _policies()
    for source in (HEAD, WORKER):
        for target in (HEAD, WORKER):
            for port in (API, METRICS, *RAY_PORTS):
                assert allows(policies, source, target, port), (source.labels, target.labels, port)


@pytest.mark.parametrize("source", [NEIGHBOUR, OTHER_NAMESPACE, OTHER_RELEASE, OPERATOR, TEST_POD, INTERNET],
                         ids=["same-namespace pod", "other namespace", "other release", "kuberay operator",
                              "helm test pod", "outside the cluster"])
def test_ray_ports_are_closed_to_everyone_outside_the_release(source):
    policies = _policies()
    for target in (HEAD, WORKER):
        for port in (GCS, CLIENT, DASHBOARD_AGENT, WORKER_PORT):
            assert not allows(policies, source, target, port), (source, target.labels, port)
    assert not allows(policies, source, WORKER, DASHBOARD)


def test_api_port_is_open_to_any_source_by_default():
    policies = _policies()
    for source in (NEIGHBOUR, OTHER_NAMESPACE, INTERNET, TEST_POD):
        assert allows(policies, source, WORKER, API)


def test_api_port_opens_only_to_api_from_peers_and_the_helm_test_pod_when_they_are_listed():
    ingress_controller = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}, "10.0.7.1")
    policies = _policies({"networkPolicy": {"apiFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]}})
    assert allows(policies, ingress_controller, WORKER, API)
    assert allows(policies, TEST_POD, WORKER, API)
    for source in (NEIGHBOUR, OTHER_NAMESPACE, INTERNET):
        assert not allows(policies, source, WORKER, API)


def test_metrics_port_is_open_to_pods_in_the_cluster_but_not_beyond():
    policies = _policies()
    assert allows(policies, OTHER_NAMESPACE, WORKER, METRICS)
    assert not allows(policies, INTERNET, WORKER, METRICS)


def test_only_the_kuberay_operator_reaches_the_dashboard():
    policies = _policies()
    assert allows(policies, OPERATOR, HEAD, DASHBOARD)
    for source in (NEIGHBOUR, OTHER_NAMESPACE, OTHER_RELEASE, INTERNET):
        assert not allows(policies, source, HEAD, DASHBOARD)
    assert not allows(policies, OPERATOR, HEAD, GCS)


def test_a_named_operator_namespace_keeps_look_alike_pods_elsewhere_out_of_the_dashboard():
    policies = _policies({"networkPolicy": {"kuberayOperator": {"namespace": "kuberay"}}})
    impostor = Pod("team-b", dict(OPERATOR.labels), "10.0.8.1")
    assert allows(policies, OPERATOR, HEAD, DASHBOARD)
    assert not allows(policies, impostor, HEAD, DASHBOARD)


def test_bundled_postgresql_takes_connections_only_from_the_release_ray_pods():
    values = {"usageLedger": {"backend": "postgres", "postgres": {"bundled": {"enabled": True}}}}
    policies = _policies(values)
    postgres = Pod(NAMESPACE, {**RELEASE_LABELS, "app.kubernetes.io/component": "postgresql"}, "10.0.9.1")
    assert allows(policies, WORKER, postgres, 5432)
    for source in (NEIGHBOUR, OTHER_NAMESPACE, TEST_POD, INTERNET):
        assert not allows(policies, source, postgres, 5432)


def test_no_policy_is_rendered_when_disabled_and_then_everything_is_open():
    rendered = render_chart({"networkPolicy": {"enabled": False}})
    assert rendered.of_kind("NetworkPolicy") == []
    assert allows([], INTERNET, HEAD, DASHBOARD)  # the evaluator's baseline: no policy, no isolation


# --- issue 12, item 10: Ray without token auth ---------------------------------------------------

def _render_error(values: dict) -> str:
    with pytest.raises(helm.HelmError) as caught:
        render_chart(values)
    return str(caught.value)


def test_ray_auth_disabled_is_refused_without_network_policies():
    error = _render_error({"ray": {"authMode": "disabled"}, "networkPolicy": {"enabled": False}})
    assert "ray.authMode is disabled" in error and "networkPolicy.enabled" in error


def test_ray_auth_disabled_is_refused_while_any_namespace_may_host_the_operator():
    error = _render_error({"ray": {"authMode": "disabled"}})
    assert "networkPolicy.kuberayOperator.namespace" in error


def test_ray_auth_disabled_renders_behind_policies_closing_dashboard_gcs_and_client():
    values = {"ray": {"authMode": "disabled"}, "networkPolicy": {"kuberayOperator": {"namespace": "kuberay"}}}
    rendered = render_chart(values)
    assert rendered.rayservice["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "disabled"}
    policies = rendered.of_kind("NetworkPolicy")
    for source in (NEIGHBOUR, OTHER_NAMESPACE, OTHER_RELEASE, INTERNET):
        for port in (DASHBOARD, GCS, CLIENT):
            assert not allows(policies, source, HEAD, port), (source, port)


DASHBOARD_NAMES = {DASHBOARD, "dashboard"}


@pytest.mark.parametrize("values", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_the_dashboard_is_never_exposed_beyond_the_pod_network(values):
    rendered = render_chart(values)
    for obj in rendered.objects:
        if obj["kind"] == "Service":
            assert obj["spec"].get("type", "ClusterIP") == "ClusterIP"
            assert not {p.get("targetPort") for p in obj["spec"]["ports"]} & DASHBOARD_NAMES
        if obj["kind"] == "Ingress":
            for rule in obj["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    assert path["backend"]["service"]["name"].endswith("-serve-svc")
    cluster = rendered.rayservice["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert "serviceType" not in head and "headService" not in head  # KubeRay's head Service stays ClusterIP
    assert "serveService" not in rendered.rayservice["spec"]
    pods = [head["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    for pod in pods:
        assert not pod["spec"].get("hostNetwork")
        for container in pod["spec"]["containers"]:
            assert not any(p.get("hostPort") for p in container.get("ports", []))
