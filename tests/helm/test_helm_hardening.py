"""Hardened pods with safe defaults (issue 16, item 3): the restricted Pod Security
Standard, a read-only root with writable scratch where Ray and vLLM write, and the knobs a
GPU cluster needs (runtime and priority classes, topology spread, service account, extra
volumes and environment, a persistent model cache)."""

from __future__ import annotations

import pytest

from tests.helm.pod_security import pod_violations
from tests.helm.rendering import RELEASE, VALUE_SETS, ci_values, merged, render_chart

SCRATCH = {"/tmp", "/home/ray/.cache", "/home/ray/.config"}


def _pods(rendered) -> dict[str, dict]:
    """Every pod template the chart renders, by a readable name."""
    pods = {"head": rendered.head_group["template"]["spec"]}
    for group in rendered.worker_groups:
        pods[f"worker/{group['groupName']}"] = group["template"]["spec"]
    for pod in rendered.of_kind("Pod"):
        pods[f"pod/{pod['metadata']['name']}"] = pod["spec"]
    for sts in rendered.of_kind("StatefulSet"):
        pods[f"statefulset/{sts['metadata']['name']}"] = sts["spec"]["template"]["spec"]
    return pods


def _container(spec: dict) -> dict:
    (container,) = spec["containers"]
    return container


def _mounts(spec: dict) -> dict[str, dict]:
    return {m["mountPath"]: m for m in _container(spec).get("volumeMounts", [])}


def _volumes(spec: dict) -> dict[str, dict]:
    return {v["name"]: v for v in spec.get("volumes", [])}


BUNDLED_POSTGRES = {"usageLedger": {"backend": "postgres", "postgres": {"bundled": {"enabled": True}}}}
AUTOSCALED = {"autoscaling": {"gpuWorkers": {"enabled": True}}}


@pytest.mark.parametrize("values", [*VALUE_SETS.values(), BUNDLED_POSTGRES, AUTOSCALED],
                         ids=[*VALUE_SETS, "bundled postgres", "kuberay autoscaler"])
def test_every_pod_meets_the_restricted_pod_security_standard(values):
    rendered = render_chart(values)
    cluster = rendered.rayservice["spec"]["rayClusterConfig"]
    violations = []
    for name, spec in _pods(rendered).items():
        # KubeRay injects the autoscaler sidecar into the head with autoscalerOptions.securityContext.
        sidecar = []
        if name == "head" and cluster["enableInTreeAutoscaling"]:
            sidecar = [{"name": "autoscaler", "securityContext": cluster["autoscalerOptions"].get("securityContext")}]
        violations += pod_violations(spec, name, sidecar)
    assert violations == []


def test_the_restricted_check_catches_a_pod_running_as_root():
    # Guards the check above: turning the defaults off must show up as violations.
    rendered = render_chart({"podSecurityContext": {"runAsNonRoot": False, "runAsUser": 0},
                             "securityContext": {"allowPrivilegeEscalation": True, "capabilities": {"drop": []}}})
    violations = pod_violations(rendered.head_group["template"]["spec"], "head")
    assert any("runAsNonRoot" in v for v in violations)
    assert any("allowPrivilegeEscalation" in v for v in violations)
    assert any("runAsUser 0" in v for v in violations)
    assert any("drop ALL" in v for v in violations)


def test_ray_containers_run_on_a_read_only_root_with_writable_scratch():
    rendered = render_chart()
    for name, spec in _pods(rendered).items():
        if not name.startswith(("head", "worker")):
            continue
        assert _container(spec)["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = _mounts(spec)
        assert SCRATCH <= set(mounts), name
        for path in SCRATCH:
            assert "emptyDir" in _volumes(spec)[mounts[path]["name"]], (name, path)
    # GPU kernel JIT caches that default outside ~/.cache are pointed into it.
    for group in rendered.worker_groups:
        env = {e["name"]: e.get("value") for e in _container(group["template"]["spec"])["env"]}
        assert env["TRITON_CACHE_DIR"].startswith("/home/ray/.cache/")
        assert env["CUDA_CACHE_PATH"].startswith("/home/ray/.cache/")


def test_a_writable_root_mounts_no_scratch_volumes():
    rendered = render_chart({"securityContext": {"readOnlyRootFilesystem": False, "allowPrivilegeEscalation": False,
                                                 "capabilities": {"drop": ["ALL"]}}})
    (group,) = rendered.worker_groups
    assert not SCRATCH & set(_mounts(group["template"]["spec"]))
    assert "TRITON_CACHE_DIR" not in {e["name"] for e in _container(group["template"]["spec"]).get("env", [])}
    assert "/dev/shm" in _mounts(group["template"]["spec"])


def test_runtime_class_applies_to_gpu_workers_only_and_a_group_may_override_it():
    groups = [dict(g, runtimeClassName="") for g in ci_values("autoscaling-values.yaml")["workerGroups"]]
    groups[1]["runtimeClassName"] = "nvidia-cdi"
    rendered = render_chart({"runtimeClassName": "nvidia", "workerGroups": groups})
    a100, l4 = rendered.worker_groups
    assert a100["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert l4["template"]["spec"]["runtimeClassName"] == "nvidia-cdi"
    assert "runtimeClassName" not in rendered.head_group["template"]["spec"]  # no GPU on the head


def test_priority_class_applies_to_every_ray_pod_and_a_group_may_override_it():
    groups = [dict(g) for g in ci_values("autoscaling-values.yaml")["workerGroups"]]
    groups[1]["priorityClassName"] = "spot-inference"
    rendered = render_chart({"priorityClassName": "inference-critical", "workerGroups": groups})
    a100, l4 = rendered.worker_groups
    assert rendered.head_group["template"]["spec"]["priorityClassName"] == "inference-critical"
    assert a100["template"]["spec"]["priorityClassName"] == "inference-critical"
    assert l4["template"]["spec"]["priorityClassName"] == "spot-inference"


def test_topology_spread_without_a_selector_spreads_the_pods_own_group():
    spread = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
    explicit = {**spread, "topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"team": "x"}}}
    group = dict(ci_values("autoscaling-values.yaml")["workerGroups"][0], topologySpreadConstraints=[spread, explicit])
    rendered = render_chart({"workerGroups": [group], "head": {"topologySpreadConstraints": [spread]}})
    (worker,) = rendered.worker_groups
    filled, kept = worker["template"]["spec"]["topologySpreadConstraints"]
    assert filled["labelSelector"]["matchLabels"] == worker["template"]["metadata"]["labels"]
    assert filled["labelSelector"]["matchLabels"]["lorafleet.dev/worker-group"] == "a100"
    assert kept["labelSelector"] == {"matchLabels": {"team": "x"}}
    (head_spread,) = rendered.head_group["template"]["spec"]["topologySpreadConstraints"]
    assert head_spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "head"


def test_a_service_account_is_created_with_its_annotations_and_no_token_where_none_is_needed():
    irsa = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/lorafleet-s3"}
    rendered = render_chart({"serviceAccount": {"annotations": irsa}})
    account = rendered.one("ServiceAccount")
    assert account["metadata"]["name"] == f"{RELEASE}-lorafleet"
    assert account["metadata"]["annotations"] == irsa
    assert account["automountServiceAccountToken"] is False
    for name, spec in _pods(rendered).items():
        if name.startswith(("head", "worker")):
            assert spec["serviceAccountName"] == account["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, name


def test_the_head_gets_the_token_while_kuberays_autoscaler_sidecar_needs_it():
    rendered = render_chart(AUTOSCALED)
    assert rendered.head_group["template"]["spec"]["automountServiceAccountToken"] is True
    assert all(g["template"]["spec"]["automountServiceAccountToken"] is False for g in rendered.worker_groups)


def test_an_existing_service_account_is_used_and_none_is_created():
    rendered = render_chart({"serviceAccount": {"create": False, "name": "ml-platform"}})
    assert rendered.of_kind("ServiceAccount") == []
    assert rendered.head_group["template"]["spec"]["serviceAccountName"] == "ml-platform"
    default = render_chart({"serviceAccount": {"create": False}})
    assert "serviceAccountName" not in default.head_group["template"]["spec"]


def test_extra_volumes_mounts_and_env_reach_the_head_and_every_worker():
    values = merged(ci_values("autoscaling-values.yaml"), {
        "extraVolumes": [{"name": "ledger", "persistentVolumeClaim": {"claimName": "ledger-rwo"}},
                         {"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [{"name": "ledger", "mountPath": "/var/lib/lorafleet"},
                              {"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
        "extraEnv": [{"name": "SSL_CERT_DIR", "value": "/etc/ssl/corporate"}],
    })
    rendered = render_chart(values)
    pods = [rendered.head_group["template"]["spec"], *(g["template"]["spec"] for g in rendered.worker_groups)]
    for spec in pods:
        assert _volumes(spec)["ledger"] == {"name": "ledger", "persistentVolumeClaim": {"claimName": "ledger-rwo"}}
        assert _mounts(spec)["/etc/ssl/corporate"]["readOnly"] is True
        assert {"name": "SSL_CERT_DIR", "value": "/etc/ssl/corporate"} in _container(spec)["env"]


def test_a_persistent_model_cache_is_a_shared_pvc_kept_on_uninstall():
    rendered = render_chart({"modelStorage": {"cache": {"persistence": {"enabled": True, "size": "500Gi",
                                                                         "storageClassName": "efs"}}}})
    claims = {c["metadata"]["name"]: c for c in rendered.of_kind("PersistentVolumeClaim")}
    cache = claims[f"{RELEASE}-lorafleet-model-cache"]
    assert cache["spec"]["accessModes"] == ["ReadWriteMany"]
    assert cache["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert cache["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (group,) = rendered.worker_groups
    mount = _mounts(group["template"]["spec"])["/home/ray/.cache/huggingface"]
    assert _volumes(group["template"]["spec"])[mount["name"]]["persistentVolumeClaim"]["claimName"] == cache["metadata"]["name"]


def test_an_existing_model_cache_claim_is_mounted_and_none_is_created():
    rendered = render_chart({"modelStorage": {"cache": {"persistence": {"enabled": True, "existingClaim": "hf-cache"}}}})
    assert [c["metadata"]["name"] for c in rendered.of_kind("PersistentVolumeClaim")] == [f"{RELEASE}-lorafleet-adapters"]
    (group,) = rendered.worker_groups
    mount = _mounts(group["template"]["spec"])["/home/ray/.cache/huggingface"]
    assert _volumes(group["template"]["spec"])[mount["name"]]["persistentVolumeClaim"]["claimName"] == "hf-cache"


def test_the_model_cache_is_a_sized_emptydir_by_default():
    (group,) = render_chart().worker_groups
    mount = _mounts(group["template"]["spec"])["/home/ray/.cache/huggingface"]
    assert _volumes(group["template"]["spec"])[mount["name"]]["emptyDir"] == {"sizeLimit": "100Gi"}


def test_an_explicit_image_tag_wins_over_the_app_version():
    rendered = render_chart({"image": {"tag": "0.1.0-cpu"}})
    assert _container(rendered.head_group["template"]["spec"])["image"] == "ghcr.io/lorafleet/lorafleet:0.1.0-cpu"
