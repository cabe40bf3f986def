"""Running Prometheus' own `promtool` on rules and synthetic series.

`promtool test rules` evaluates rules exactly as a Prometheus server does, over series given
in its expanding notation (`0+1x30`: 0, 1, ..., 30 at each interval). promtool comes with
Debian's `prometheus` package (`make prometheus`); a missing promtool is a test failure.

The series carry the labels they have in a real cluster, because the rules and panels
select and join on them:

- the Prometheus Operator's PodMonitor target labels (`namespace`, `pod`, `container`,
  `endpoint`, `job`, `instance`) plus the chart's relabelings (`lorafleet_release`,
  `ray_io_cluster`, `ray_io_node_type`, `ray_io_group`);
- the labels Ray adds to every application metric (`Component`, `NodeAddress`,
  `SessionName`, `Version`, `WorkerId`), next to lorafleet's own;
- NVIDIA's DCGM exporter's (`gpu`, `UUID`, `device`, `modelName`, `Hostname`,
  `DCGM_FI_DRIVER_VERSION`) and the GPU's user, in `pod`/`namespace`/`container` when the
  exporter is scraped with honorLabels, in `exported_pod`/`exported_namespace`/
  `exported_container` (the target's own `pod` being the exporter's) when not.
"""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path

import yaml

NAMESPACE = "llm"
RELEASE_LABEL = "llm/fleet"
CLUSTER = "fleet-lorafleet-raycluster-x8k2p"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install prometheus (or `make prometheus`)"
    return path


def series(name: str, labels: dict[str, str]) -> str:
    """`name{k="v", ...}` in promtool's input notation."""
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def pod_ip(pod: str) -> str:
    """A stable, distinct pod IP per pod name."""
    digest = zlib.crc32(pod.encode())
    return f"10.{digest % 200}.{digest // 200 % 250}.{digest // 50000 % 250}"


def ray_pod(pod: str, node_type: str = "worker", group: str = "gpu", release: str = RELEASE_LABEL,
            namespace: str = NAMESPACE) -> dict[str, str]:
    """Labels of a series scraped from a Ray pod of the release by the chart's PodMonitor."""
    return {
        "namespace": namespace, "pod": pod, "container": f"ray-{node_type}", "endpoint": "metrics",
        "job": f"{namespace}/fleet-lorafleet", "instance": f"{pod_ip(pod)}:8080",
        "lorafleet_release": release, "ray_io_cluster": CLUSTER, "ray_io_node_type": node_type, "ray_io_group": group,
        "Component": "core_worker", "NodeAddress": pod_ip(pod), "SessionName": "session_2026_01_01",
        "Version": "2.60.0", "WorkerId": f"w-{pod}",
    }


def up(pod: str, **kwargs) -> dict[str, str]:
    """The target labels of a pod's `up` series (no Ray labels)."""
    labels = ray_pod(pod, **kwargs)
    for key in ("Component", "NodeAddress", "SessionName", "Version", "WorkerId"):
        del labels[key]
    return labels


def dcgm(pod: str, gpu: int, honor_labels: bool = False, namespace: str = NAMESPACE) -> dict[str, str]:
    """Labels of a DCGM exporter series about GPU `gpu` used by `pod`."""
    labels = {"gpu": str(gpu), "UUID": f"GPU-{pod}-{gpu}", "device": f"nvidia{gpu}",
              "modelName": "NVIDIA A100-SXM4-80GB", "Hostname": "gpu-node-1", "DCGM_FI_DRIVER_VERSION": "550.90.07",
              "job": "nvidia-dcgm-exporter", "instance": "10.0.9.9:9400", "endpoint": "gpu-metrics"}
    if honor_labels:
        labels.update(namespace=namespace, pod=pod, container="ray-worker")
    else:
        labels.update(namespace="gpu-operator", pod="nvidia-dcgm-exporter-7xkq2", container="nvidia-dcgm-exporter",
                      exported_namespace=namespace, exported_pod=pod, exported_container="ray-worker")
    return labels


def check_rules(tmp_path: Path, groups: list[dict]) -> subprocess.CompletedProcess:
    path = tmp_path / "check.rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)


def test_rules(tmp_path: Path, groups: list[dict], tests: list[dict], evaluation_interval: str = "1m") -> subprocess.CompletedProcess:
    """Run `promtool test rules` with `groups` as the rule file and `tests` as its cases."""
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    spec = tmp_path / "tests.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": evaluation_interval,
                                    "tests": tests}, sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", str(spec)], capture_output=True, text=True, cwd=tmp_path)


test_rules.__test__ = False  # a helper, not a pytest test
