"""Wrong values fail at `helm install` / `helm template` time, with a message naming them.

values.schema.json (enforced by Helm itself, here through helm-python-sdk's render and
lint) rejects wrong types and unknown keys; the templates refuse combinations of values
a schema cannot express.
"""

from __future__ import annotations

import json

import helm_python as helm
import pytest

from tests.helm.rendering import CHART, ci_values, load_sync_tool, merged, render_chart


def _render_error(values: dict) -> str:
    with pytest.raises(helm.HelmError) as caught:
        render_chart(values)
    return str(caught.value)


SCHEMA_VIOLATIONS = {
    "unknown top-level key": ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
    "unknown lorafleet section": ({"lorafleet": {"router": {}}}, "additional properties 'router' not allowed"),
    "misspelt engine field": ({"lorafleet": {"engine": {"max_lora": 4}}}, "additional properties 'max_lora' not allowed"),
    "engine field of the wrong type": ({"lorafleet": {"engine": {"max_loras": "eight"}}}, "/lorafleet/engine/max_loras"),
    "lora rank outside the allowed set": ({"lorafleet": {"engine": {"max_lora_rank": 48}}}, "/lorafleet/engine/max_lora_rank"),
    "non-positive replica count": ({"lorafleet": {"deployment": {"num_replicas": 0}}}, "/lorafleet/deployment/num_replicas"),
    "gpu memory fraction above one": ({"lorafleet": {"engine": {"gpu_memory_utilization": 1.5}}}, "/lorafleet/engine/gpu_memory_utilization"),
    "served name with a space": ({"lorafleet": {"model": {"served_name": "my model"}}}, "/lorafleet/model/served_name"),
    "unknown routing knob": ({"lorafleet": {"routing": {"settings": {"weigth_kv": 1}}}}, "additional properties 'weigth_kv' not allowed"),
    "unknown routing policy": ({"lorafleet": {"routing": {"policy": "round_robin"}}}, "/lorafleet/routing/policy"),
    "port out of range": ({"lorafleet": {"server": {"port": 70000}}}, "/lorafleet/server/port"),
    "unknown worker group field": ({"workerGroups": [{"name": "g", "replicas": 1, "minReplicas": 1, "maxReplicas": 1, "gpus": 1,
                                                      "resources": {}, "shmSize": "1Gi", "gpu": 1}]},
                                   "additional properties 'gpu' not allowed"),
    "worker group without gpus": ({"workerGroups": [{"name": "g", "replicas": 1, "minReplicas": 1, "maxReplicas": 1,
                                                     "resources": {}, "shmSize": "1Gi"}]}, "missing property 'gpus'"),
    "zero gpus per worker pod": ({"workerGroups": [{"name": "g", "replicas": 1, "minReplicas": 1, "maxReplicas": 1, "gpus": 0,
                                                    "resources": {}, "shmSize": "1Gi"}]}, "/workerGroups/0/gpus"),
    "no worker group at all": ({"workerGroups": []}, "/workerGroups"),
    "worker group name not a DNS label": ({"workerGroups": [{"name": "GPU_A100", "replicas": 1, "minReplicas": 1, "maxReplicas": 1,
                                                             "gpus": 1, "resources": {}, "shmSize": "1Gi"}]}, "/workerGroups/0/name"),
    "shm size not a quantity": ({"workerGroups": [{"name": "g", "replicas": 1, "minReplicas": 1, "maxReplicas": 1, "gpus": 1,
                                                   "resources": {}, "shmSize": "lots"}]}, "/workerGroups/0/shmSize"),
    "unknown model storage type": ({"modelStorage": {"type": "nfs"}}, "/modelStorage/type"),
    "boolean given as a string": ({"auth": {"enabled": "yes"}}, "/auth/enabled"),
    "unknown key under autoscaling": ({"autoscaling": {"engineReplicas": {"target": 10}}}, "additional properties 'target' not allowed"),
    "ray start parameter that is not a string": ({"head": {"rayStartParams": {"num-cpus": 0}}}, "/head/rayStartParams/num-cpus"),
    "unknown image pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "unknown upscaling mode": ({"autoscaling": {"gpuWorkers": {"upscalingMode": "Fast"}}}, "/autoscaling/gpuWorkers/upscalingMode"),
    "typo in monitoring": ({"monitoring": {"serviceMonitor": {"enabled": True}}}, "additional properties 'serviceMonitor' not allowed"),
    # Kubernetes-typed values are checked against KubeRay's pod schema, closed: the API
    # server would silently drop these fields from the RayService.
    "typo in the pod securityContext": ({"podSecurityContext": {"runAsNonroot": True}},
                                        "additional properties 'runAsNonroot' not allowed"),
    "typo in the container securityContext": ({"securityContext": {"readOnlyRootFilesystems": True}},
                                              "additional properties 'readOnlyRootFilesystems' not allowed"),
    "container securityContext of the wrong type": ({"securityContext": {"allowPrivilegeEscalation": "no"}},
                                                    "/securityContext/allowPrivilegeEscalation"),
    "extra volume of an unknown type": ({"extraVolumes": [{"name": "x", "nfsVolume": {"server": "nas"}}]},
                                        "additional properties 'nfsVolume' not allowed"),
    "extra volume mount without a path": ({"extraVolumeMounts": [{"name": "x"}]}, "missing property 'mountPath'"),
    "extra env without a name": ({"extraEnv": [{"value": "1"}]}, "missing property 'name'"),
    "topology spread without a topology key": ({"head": {"topologySpreadConstraints": [{"maxSkew": 1,
                                                                                         "whenUnsatisfiable": "DoNotSchedule"}]}},
                                               "missing property 'topologyKey'"),
    "network policy peer with a typo": ({"networkPolicy": {"apiFrom": [{"namespaceSelectors": {}}]}},
                                        "additional properties 'namespaceSelectors' not allowed"),
    "unknown upgrade strategy": ({"upgradeStrategy": {"type": "BlueGreen"}}, "/upgradeStrategy/type"),
    "surge above 100 percent": ({"upgradeStrategy": {"clusterUpgradeOptions": {"maxSurgePercent": 150}}},
                                "/upgradeStrategy/clusterUpgradeOptions/maxSurgePercent"),
    "redis address without a port": ({"gcsFaultTolerance": {"redisAddress": "redis.svc"}}, "/gcsFaultTolerance/redisAddress"),
    "disruption budget as a fraction": ({"podDisruptionBudget": {"workerMaxUnavailable": "0.5"}},
                                        "/podDisruptionBudget/workerMaxUnavailable"),
    "unknown ledger backend": ({"usageLedger": {"backend": "mysql"}}, "/usageLedger/backend"),
    "dsn variable that is no variable name": ({"usageLedger": {"postgres": {"dsnEnv": "LEDGER-DSN"}}},
                                              "/usageLedger/postgres/dsnEnv"),
    "error ratio as a percentage": ({"monitoring": {"prometheusRule": {"errorRatio": 5}}},
                                    "/monitoring/prometheusRule/errorRatio"),
    "helm test asking for no tokens": ({"tests": {"maxTokens": 0}}, "/tests/maxTokens"),
    "the old serviceAccountName value": ({"serviceAccountName": "x"}, "additional properties 'serviceAccountName' not allowed"),
}


@pytest.mark.parametrize("values, message", SCHEMA_VIOLATIONS.values(), ids=SCHEMA_VIOLATIONS.keys())
def test_template_rejects_values_that_break_the_schema(values, message):
    error = _render_error(values)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


@pytest.mark.parametrize("values, message", list(SCHEMA_VIOLATIONS.values())[:4], ids=list(SCHEMA_VIOLATIONS)[:4])
def test_lint_reports_values_that_break_the_schema(values, message):
    report = helm.lint(CHART, values, strict=True)
    assert any(message in e for e in report["errors"]), report


TEMPLATE_CHECKS = {
    "host other than 0.0.0.0": ({"lorafleet": {"server": {"host": "127.0.0.1"}}}, "lorafleet.server.host must be 0.0.0.0"),
    "ingress with no cpus": ({"lorafleet": {"deployment": {"ingress_cpus": 0}}}, "lorafleet.deployment.ingress_cpus must be > 0"),
    "hub storage with a path": ({"lorafleet": {"model": {"source": "/mnt/model/x"}}}, "modelStorage.type is hub"),
    "pvc storage without a claim": ({"lorafleet": {"model": {"source": "/mnt/model/x"}}, "modelStorage": {"type": "pvc"}},
                                    "set modelStorage.pvc.claimName"),
    "pvc model outside the mount": ({"lorafleet": {"model": {"source": "/data/x"}},
                                     "modelStorage": {"type": "pvc", "pvc": {"claimName": "c"}}},
                                    'must be a path under modelStorage.pvc.mountPath "/mnt/model"'),
    "pvc model path sharing only a prefix": ({"lorafleet": {"model": {"source": "/mnt/model2/x"}},
                                              "modelStorage": {"type": "pvc", "pvc": {"claimName": "c"}}},
                                             "must be a path under modelStorage.pvc.mountPath"),
    "s3 storage with a hub id": ({"modelStorage": {"type": "s3"}}, "must be an s3:// URI"),
    "pvc adapter store with an s3 uri": ({"lorafleet": {"adapters": {"uri": "s3://b/a"}}}, "must be the absolute path the volume is mounted at"),
    "s3 adapter store with a path": ({"adapterStorage": {"type": "s3"}}, "must be an s3://bucket/prefix URI"),
    "adapter pvc neither created nor named": ({"adapterStorage": {"pvc": {"create": False}}}, "set adapterStorage.pvc.existingClaim"),
    "replicas above maxReplicas": ({"workerGroups": [{"name": "g", "replicas": 5, "minReplicas": 1, "maxReplicas": 4, "gpus": 1,
                                                      "resources": {}, "shmSize": "1Gi"}]},
                                   "workerGroups[g]: need minReplicas <= replicas <= maxReplicas"),
    "duplicate worker group names": ({"workerGroups": [{"name": "g", "replicas": 1, "minReplicas": 1, "maxReplicas": 4, "gpus": 1,
                                                        "resources": {}, "shmSize": "1Gi"}] * 2}, "group names must be unique"),
    "more engine gpus than the groups reach": ({"lorafleet": {"deployment": {"num_replicas": 5}}},
                                               "need 5 GPUs, but the worker groups hold at most 2 such replicas"),
    "autoscaling min above max": ({"autoscaling": {"engineReplicas": {"enabled": True, "minReplicas": 3, "maxReplicas": 2}}},
                                  "minReplicas (3) must be <= maxReplicas (2)"),
    "autoscaling target above max_ongoing_requests": ({"autoscaling": {"engineReplicas": {"enabled": True, "targetOngoingRequests": 512}}},
                                                      "must be <= lorafleet.deployment.max_ongoing_requests (256; unset: engine.max_num_seqs)"),
}


@pytest.mark.parametrize("values, message", TEMPLATE_CHECKS.values(), ids=TEMPLATE_CHECKS.keys())
def test_template_refuses_inconsistent_values_with_a_message_naming_them(values, message):
    assert message in _render_error(values)


def test_gpu_capacity_check_counts_min_replicas_when_serve_autoscales():
    # 24 configured replicas would not fit 4 GPUs, but with autoscaling only minReplicas must.
    values = {"lorafleet": {"deployment": {"num_replicas": 24}},
              "autoscaling": {"engineReplicas": {"enabled": True, "minReplicas": 4, "maxReplicas": 24},
                              "gpuWorkers": {"enabled": True}}}
    assert render_chart(values).rayservice


def test_ci_values_files_pass_the_schema():
    with helm.Chart.load(CHART) as chart:
        for path in sorted((CHART / "ci").glob("*.yaml")):
            chart.validate_schema(ci_values(path.name))
        with pytest.raises(helm.HelmValuesError, match="maxReplica"):
            chart.validate_schema(merged(ci_values("default-values.yaml"), {"workerGroups": [{"maxReplica": 1}]}))


def test_values_schema_lorafleet_part_is_the_config_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    generated = load_sync_tool().config_schema_defs()
    assert schema["properties"]["lorafleet"] == {"$ref": "#/$defs/LorafleetConfig"}
    for name, definition in generated.items():
        assert schema["$defs"][name] == definition, f"$defs.{name} differs: run python helm/tools/sync_chart.py"


def test_values_schema_is_generated_and_describes_chart_values_from_values_yaml():
    # The chart's own part comes from values_schema.py, its descriptions from values.yaml.
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema == load_sync_tool().values_schema((CHART / "values.yaml").read_text())
    assert schema["properties"]["drain"]["properties"]["timeoutSeconds"]["description"].startswith(
        "Longest a terminating worker waits")
    pod_security = schema["properties"]["podSecurityContext"]
    assert "runAsNonRoot" in pod_security["properties"] and pod_security["additionalProperties"] is False


def test_a_value_values_schema_does_not_describe_stops_the_generator():
    with pytest.raises(SystemExit, match="values.yaml documents newKnob"):
        load_sync_tool().values_schema((CHART / "values.yaml").read_text() + "\n# -- A knob.\nnewKnob: 1\n")


def test_values_schema_closes_every_object_it_describes():
    # Objects with listed properties reject unknown keys; only maps meant to be open
    # (labels, resources, affinity, ...) are left without listed properties.
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node, path):
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema, "")
    assert open_objects == []
