"""The RayService: admitted by KubeRay's CRD schema, and shaped the way a GPU fleet needs."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from tests.helm.rendering import RELEASE, ci_values, merged

GPU = "nvidia.com/gpu"


def _container(pod_template: dict) -> dict:
    (container,) = pod_template["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _mounts(container: dict) -> dict[str, dict]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def _volumes(pod_template: dict) -> dict[str, dict]:
    return {v["name"]: v for v in pod_template["spec"].get("volumes", [])}


def _ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


# --- admitted by KubeRay's CRD ------------------------------------------------------------

def test_rayservice_is_admitted_by_the_kuberay_crd_schema(render, value_set, validate_rayservice):
    _, values = value_set
    rayservice = render(values).rayservice
    assert rayservice["apiVersion"] == "ray.io/v1"
    validate_rayservice(rayservice)


def test_crd_validation_rejects_an_unknown_field(render, validate_rayservice):
    rayservice = render().rayservice
    rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 4  # typo
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        validate_rayservice(rayservice)


def test_crd_validation_rejects_a_wrong_type(render, validate_rayservice):
    rayservice = render().rayservice
    rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError) as caught:
        validate_rayservice(rayservice)
    assert list(caught.value.absolute_path)[-1] == "replicas"


def test_crd_validation_rejects_an_unknown_field_inside_a_pod_template(render, validate_rayservice):
    rayservice = render().rayservice
    _container(rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"])["resource"] = {}
    with pytest.raises(jsonschema.ValidationError, match="resource"):
        validate_rayservice(rayservice)


def test_admission_drops_nulls_and_fills_the_crd_defaults(render, validate_rayservice):
    rayservice = render().rayservice
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    head["spec"]["affinity"] = None
    ports = _container(head)["ports"]
    del ports[0]["protocol"]
    admitted = validate_rayservice(rayservice)
    admitted_head = admitted["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    assert "affinity" not in admitted_head["spec"]
    assert _container(admitted_head)["ports"][0]["protocol"] == "TCP"  # the CRD's default


# --- head: control plane only -----------------------------------------------------------------

def test_head_group_offers_no_cpus_or_gpus_to_serve_replicas(render, value_set):
    _, values = value_set
    head = render(values).head_group
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["num-gpus"] == "0"
    resources = _container(head["template"])["resources"]
    assert GPU not in resources.get("requests", {}) and GPU not in resources.get("limits", {})


def test_head_keeps_num_cpus_zero_even_when_values_ask_for_cpus(render):
    head = render({"head": {"rayStartParams": {"num-cpus": "8", "object-store-memory": "1000000000"}}}).head_group
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["object-store-memory"] == "1000000000"


def test_head_mounts_no_model_or_adapter_storage(render):
    head = render(ci_values("pvc-values.yaml")).head_group
    mounts = _mounts(_container(head["template"]))
    assert set(mounts) == {"/tmp", "/home/ray/.cache", "/home/ray/.config"}  # writable scratch only
    assert all("emptyDir" in v for v in _volumes(head["template"]).values())


# --- GPU worker groups -------------------------------------------------------------------------

def test_renders_gpu_requests_and_limits_on_every_worker_group(render, value_set):
    _, values = value_set
    rendered = render(values)
    wanted = {g["name"]: g["gpus"] for g in values.get("workerGroups", [{"name": "gpu", "gpus": 1}])}
    assert {g["groupName"] for g in rendered.worker_groups} == set(wanted)
    for group in rendered.worker_groups:
        resources = _container(group["template"])["resources"]
        gpus = wanted[group["groupName"]]
        assert resources["requests"][GPU] == gpus
        assert resources["limits"][GPU] == gpus
        assert group["rayStartParams"]["num-gpus"] == str(gpus)


def test_worker_groups_keep_their_cpu_and_memory_next_to_the_gpus(render):
    (a100, l4) = render(ci_values("autoscaling-values.yaml")).worker_groups
    assert _container(a100["template"])["resources"]["requests"] == {"cpu": "16", "memory": "96Gi", GPU: 2}
    assert _container(l4["template"])["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", GPU: 1}


def test_every_worker_pod_mounts_a_memory_backed_dev_shm_of_the_group_size(render, value_set):
    _, values = value_set
    for group in render(values).worker_groups:
        mount = _mounts(_container(group["template"]))["/dev/shm"]
        volume = _volumes(group["template"])[mount["name"]]
        assert volume["emptyDir"]["medium"] == "Memory"
        assert volume["emptyDir"]["sizeLimit"].endswith("Gi")


def test_worker_groups_carry_their_tolerations_and_node_selectors(render):
    (a100, l4) = render(ci_values("autoscaling-values.yaml")).worker_groups
    assert a100["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in l4["template"]["spec"]["tolerations"]
    assert a100["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "32Gi"


def test_default_worker_group_tolerates_the_gpu_taint(render):
    (group,) = render().worker_groups
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in group["template"]["spec"]["tolerations"]


def test_worker_group_sizes_come_from_values(render):
    (a100, l4) = render(ci_values("autoscaling-values.yaml")).worker_groups
    assert (a100["replicas"], a100["minReplicas"], a100["maxReplicas"]) == (1, 0, 4)
    assert (l4["replicas"], l4["minReplicas"], l4["maxReplicas"]) == (0, 0, 8)


def test_serve_and_metrics_ports_are_named_on_head_and_workers(render):
    rendered = render({"lorafleet": {"server": {"port": 9000}}})
    pods = [rendered.head_group["template"], *(g["template"] for g in rendered.worker_groups)]
    for pod in pods:
        ports = _ports(_container(pod))
        assert ports["serve"] == 9000  # KubeRay's serve Service targets the port named serve
        assert ports["metrics"] == 8080


def test_pods_carry_the_release_labels_the_pod_monitor_selects(render):
    rendered = render(ci_values("autoscaling-values.yaml"))
    selector = rendered.one("PodMonitor")["spec"]["selector"]["matchLabels"]
    pods = [rendered.head_group["template"], *(g["template"] for g in rendered.worker_groups)]
    for pod in pods:
        assert selector.items() <= pod["metadata"]["labels"].items()


def test_image_is_the_chart_default_gpu_image_everywhere(render):
    rendered = render()
    pods = [rendered.head_group["template"], *(g["template"] for g in rendered.worker_groups)]
    assert {_container(p)["image"] for p in pods} == {"ghcr.io/lorafleet/lorafleet:0.1.0-gpu"}
    assert rendered.rayservice["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"


# --- model and adapter storage ---------------------------------------------------------------------

def test_hub_model_gets_hf_token_from_the_named_secret(render):
    (group,) = render(ci_values("default-values.yaml")).worker_groups
    env = _env(_container(group["template"]))
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert env["HF_HOME"]["value"] == "/home/ray/.cache/huggingface"
    assert "/home/ray/.cache/huggingface" in _mounts(_container(group["template"]))


def test_public_hub_model_gets_no_hf_token(render):
    (group,) = render().worker_groups
    assert "HF_TOKEN" not in _env(_container(group["template"]))


def test_pvc_model_is_mounted_read_only_where_the_source_points(render):
    (group,) = render(ci_values("pvc-values.yaml")).worker_groups
    container = _container(group["template"])
    mount = _mounts(container)["/mnt/model"]
    assert mount["readOnly"] is True
    volume = _volumes(group["template"])[mount["name"]]
    assert volume["persistentVolumeClaim"] == {"claimName": "llama-weights", "readOnly": True}
    assert "HF_TOKEN" not in _env(container)


def test_pvc_model_sub_path_is_mounted(render):
    values = {"lorafleet": {"model": {"source": "/models/m"}},
              "modelStorage": {"type": "pvc", "pvc": {"claimName": "c", "mountPath": "/models", "subPath": "hf"}}}
    (group,) = render(values).worker_groups
    assert _mounts(_container(group["template"]))["/models"]["subPath"] == "hf"


def test_s3_model_and_adapters_get_aws_credentials_from_the_secret(render):
    (group,) = render(ci_values("s3-values.yaml")).worker_groups
    env = _env(_container(group["template"]))
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "lorafleet-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "lorafleet-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage.svc:9000"
    assert env["AWS_REGION"]["value"] == env["AWS_DEFAULT_REGION"]["value"] == "us-east-1"
    volumes = _volumes(group["template"])
    assert "model" not in volumes and "adapters" not in volumes and "hf-cache" not in volumes


def test_s3_adapter_store_alone_still_gets_the_credentials(render):
    values = {"lorafleet": {"adapters": {"uri": "s3://bucket/adapters"}}, "adapterStorage": {"type": "s3"},
              "s3": {"existingSecret": "creds"}, "usageLedger": {"backend": "postgres", "postgres": {"existingSecret": "dsn"}}}
    rendered = render(values)
    (group,) = rendered.worker_groups
    assert "AWS_ACCESS_KEY_ID" in _env(_container(group["template"]))
    assert rendered.of_kind("PersistentVolumeClaim") == []
    assert "arrive with a later release" not in rendered.notes


def test_no_aws_variables_without_s3(render):
    (group,) = render(ci_values("pvc-values.yaml")).worker_groups
    assert not any(name.startswith("AWS_") for name in _env(_container(group["template"])))


def test_adapter_pvc_is_read_write_many_and_mounted_at_the_adapters_uri(render):
    rendered = render()
    pvc = rendered.one("PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (group,) = rendered.worker_groups
    mount = _mounts(_container(group["template"]))["/mnt/adapters"]
    assert _volumes(group["template"])[mount["name"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_existing_adapter_claim_is_mounted_and_none_is_created(render):
    rendered = render(ci_values("pvc-values.yaml"))
    assert rendered.of_kind("PersistentVolumeClaim") == []
    (group,) = rendered.worker_groups
    mount = _mounts(_container(group["template"]))["/mnt/adapters"]
    assert _volumes(group["template"])[mount["name"]]["persistentVolumeClaim"]["claimName"] == "lorafleet-adapters-rwx"


# --- auth -------------------------------------------------------------------------------------------

def test_api_key_secret_is_mounted_read_only_on_workers_when_named(render):
    rendered = render(ci_values("default-values.yaml"))
    (group,) = rendered.worker_groups
    mount = _mounts(_container(group["template"]))["/etc/lorafleet/auth"]
    assert mount["readOnly"] is True
    assert _volumes(group["template"])[mount["name"]]["secret"]["secretName"] == "lorafleet-api-keys"
    assert "every request needs `Authorization: Bearer <key>`" in rendered.notes
    (app,) = rendered.serve_config["applications"]
    assert app["args"]["server"]["auth"] == {"enabled": True, "keys_file": "/etc/lorafleet/auth/keys.yaml"}


def test_auth_is_on_by_default_and_notes_warn_while_no_secret_is_named(render):
    rendered = render()
    assert rendered.notes.count("WARNING: auth.enabled is true but auth.existingSecret is empty") == 1
    assert "fails closed" in rendered.notes
    (app,) = rendered.serve_config["applications"]
    assert app["args"]["server"]["auth"]["enabled"] is True  # lorafleet enforces keys: no silent open endpoint
    (group,) = rendered.worker_groups
    assert "/etc/lorafleet/auth" not in _mounts(_container(group["template"]))


def test_disabled_auth_mounts_nothing_even_with_a_secret_named(render):
    rendered = render({"auth": {"enabled": False, "existingSecret": "keys"}})
    (group,) = rendered.worker_groups
    assert "api-keys" not in _volumes(group["template"])
    assert "WARNING: auth.enabled is false" in rendered.notes
    (app,) = rendered.serve_config["applications"]
    assert app["args"]["server"]["auth"] == {"enabled": False}


def test_keys_file_path_follows_mount_path_and_key(render):
    rendered = render({"auth": {"existingSecret": "keys", "mountPath": "/secrets/", "keysFileKey": "tenants.json"}})
    (app,) = rendered.serve_config["applications"]
    assert app["args"]["server"]["auth"]["keys_file"] == "/secrets/tenants.json"


# --- cluster-level switches -------------------------------------------------------------------------

def test_kuberay_autoscaler_is_enabled_with_the_options_from_values(render):
    cluster = render(ci_values("autoscaling-values.yaml")).rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    options = cluster["autoscalerOptions"]
    assert options["upscalingMode"] == "Conservative"
    assert options["idleTimeoutSeconds"] == 600
    assert options["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}


def test_kuberay_autoscaler_is_off_by_default(render):
    cluster = render().rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is False
    assert "autoscalerOptions" not in cluster


def test_ray_token_auth_and_head_exclusion_follow_values(render):
    default = render().rayservice["spec"]
    assert default["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    assert default["excludeHeadPodFromServeSvc"] is True
    changed = render({"ray": {"authMode": "disabled"}, "serve": {"excludeHeadPodFromServeSvc": False},
                      "networkPolicy": {"kuberayOperator": {"namespace": "kuberay"}}}).rayservice["spec"]
    assert changed["rayClusterConfig"]["authOptions"] == {"mode": "disabled"}
    assert changed["excludeHeadPodFromServeSvc"] is False


def test_names_derive_from_the_release_and_stay_short_enough_for_kuberay(render):
    assert render().rayservice["metadata"]["name"] == f"{RELEASE}-lorafleet"
    long_name = render({"nameOverride": "a-very-long-chart-name-that-goes-on-and-on-and-on"}).rayservice
    assert len(long_name["metadata"]["name"]) <= 40
    assert render({"fullnameOverride": "prod-llm"}).rayservice["metadata"]["name"] == "prod-llm"


def test_extra_env_reaches_head_and_workers(render):
    rendered = render(merged(ci_values("default-values.yaml"), {"extraEnv": [{"name": "NCCL_DEBUG", "value": "INFO"}]}))
    pods = [rendered.head_group["template"], *(g["template"] for g in rendered.worker_groups)]
    for pod in pods:
        assert _env(_container(pod))["NCCL_DEBUG"]["value"] == "INFO"


def test_rendering_does_not_mutate_between_worker_groups(render):
    # Two groups with the same resources dict must each get their own GPU count.
    resources = {"requests": {"cpu": "4", "memory": "16Gi"}}
    groups = [{"name": n, "replicas": 1, "minReplicas": 1, "maxReplicas": 1, "gpus": g,
               "resources": copy.deepcopy(resources), "shmSize": "1Gi"} for n, g in (("one", 1), ("four", 4))]
    rendered = render({"workerGroups": groups})
    counts = {g["groupName"]: _container(g["template"])["resources"]["requests"][GPU] for g in rendered.worker_groups}
    assert counts == {"one": 1, "four": 4}


def test_worker_ray_gpu_count_follows_the_pod_even_when_values_say_otherwise(render):
    group = {"name": "g", "replicas": 1, "minReplicas": 1, "maxReplicas": 2, "gpus": 4, "resources": {},
             "shmSize": "8Gi", "rayStartParams": {"num-gpus": "8", "object-store-memory": "2000000000"}}
    (rendered,) = render({"workerGroups": [group]}).worker_groups
    assert rendered["rayStartParams"] == {"num-gpus": "4", "object-store-memory": "2000000000"}
