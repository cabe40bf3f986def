"""Rendering the chart offline: helm-python-sdk (Helm's Go SDK over a C ABI), no `helm`
binary and no cluster. Paths, the values sets the tests run on, and a parsed view of
what one `helm template` produced."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "lorafleet"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RELEASE = "fleet"
NAMESPACE = "llm"


@functools.cache
def load_sync_tool():
    """helm/tools/sync_chart.py, imported by path (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("sync_chart", REPO / "helm" / "tools" / "sync_chart.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sync_chart"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# KubeRay's RayService schema: one path, the sync tool's (CI runs a fresh clone with a copy
# of shared/ beside it: <repo>/../shared/kuberay; move it there once it is vendored).
KUBERAY_DIR = load_sync_tool().KUBERAY_SCHEMA.parent


def ci_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / name).read_text()) or {}


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge value overrides (later wins; lists replace), like repeated `-f` files."""
    out: dict[str, Any] = {}
    for layer in layers:
        out = _merge(out, layer)
    return out


def _merge(base: dict, over: dict) -> dict:
    result = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class Rendered:
    """The objects one `helm template` produced, plus NOTES.txt."""

    def __init__(self, manifests: dict[str, str]):
        self.notes = manifests.pop(f"{CHART.name}/templates/NOTES.txt", "")
        self.objects: list[dict[str, Any]] = []
        for source, text in sorted(manifests.items()):
            for doc in yaml.load_all(text, Loader=yaml.CSafeLoader):  # libyaml: dashboards are large
                if doc:
                    doc.setdefault("metadata", {})
                    self.objects.append(doc)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
        return found[0]

    @property
    def rayservice(self) -> dict[str, Any]:
        return self.one("RayService")

    @property
    def serve_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.rayservice["spec"]["serveConfigV2"])

    @property
    def worker_groups(self) -> list[dict[str, Any]]:
        return self.rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]

    @property
    def head_group(self) -> dict[str, Any]:
        return self.rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]


def selects_postgres(values: dict[str, Any]) -> bool:
    """Whether a values set puts the usage ledger on PostgreSQL."""
    return values.get("usageLedger", {}).get("backend") == "postgres"


def render_chart(values: dict[str, Any] | None = None, chart_dir: Path = CHART, *, fresh: bool = False) -> Rendered:
    """`helm template` of the chart. Renders of the repository's chart are cached by their
    values (the chart does not change during a test run): each call still gets its own
    parsed objects, so a test may change them. `fresh` renders again (random values)."""
    if chart_dir != CHART or fresh:
        return Rendered(_render(values, chart_dir))
    return Rendered(dict(_cached_render(json.dumps(values or {}, sort_keys=True))))


def _render(values: dict[str, Any] | None, chart_dir: Path) -> dict[str, str]:
    with helm.Chart.load(chart_dir) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


@functools.lru_cache(maxsize=256)
def _cached_render(values_json: str) -> tuple[tuple[str, str], ...]:
    return tuple(_render(json.loads(values_json), CHART).items())


# The values sets every "renders" test runs on: chart defaults, each ci/ file, and a few
# overrides on top of them.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    **{f"ci/{p.name}": yaml.safe_load(p.read_text()) or {} for p in CI_VALUES},
    "override: serve autoscaling only, one worker group": {
        "autoscaling": {"engineReplicas": {"enabled": True, "minReplicas": 2, "maxReplicas": 6, "targetOngoingRequests": 32}},
        "workerGroups": [{"name": "h100", "replicas": 3, "minReplicas": 3, "maxReplicas": 3, "gpus": 8,
                          "resources": {"requests": {"cpu": "96", "memory": "900Gi"}}, "shmSize": "64Gi"}],
        "lorafleet": {"deployment": {"num_replicas": 24}},
    },
    "override: gpu-pod autoscaling, no auth, custom names": {
        "fullnameOverride": "prod-llm",
        "autoscaling": {"gpuWorkers": {"enabled": True, "upscalingMode": "Aggressive", "idleTimeoutSeconds": 60}},
        "auth": {"enabled": False},
        "serve": {"excludeHeadPodFromServeSvc": False},
        "imagePullSecrets": [{"name": "ghcr"}],
        "serviceAccount": {"create": False, "name": "lorafleet"},
        "extraEnv": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}],
        "head": {"nodeSelector": {"pool": "system"}, "rayStartParams": {"num-cpus": "4"}},
        "lorafleet": {"routing": {"policy": "pow2"}},
    },
    "override: small model on a pvc, two engine replicas per GPU": {
        "lorafleet": {
            "model": {"source": "/models/qwen2.5-0.5b", "served_name": "qwen2.5-0.5b", "aliases": []},
            "engine": {"max_model_len": 4096, "gpu_memory_utilization": 0.45, "dtype": "float16"},
            "deployment": {"num_replicas": 4, "replica_gpus": 0.5, "replica_cpus": 2},
            "server": {"port": 9000},
        },
        "modelStorage": {"type": "pvc", "pvc": {"claimName": "small-models", "mountPath": "/models", "subPath": "hf"}},
        "adapterStorage": {"pvc": {"storageClassName": "efs-sc", "size": "5Gi"}},
        "ingress": {"enabled": True, "hosts": [{"host": "qwen.internal", "paths": [{"path": "/v1", "pathType": "Prefix"}]}]},
        "monitoring": {"podMonitor": {"enabled": True, "interval": "30s"}},
    },
}


