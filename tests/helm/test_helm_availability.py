"""Upgrades and availability (issue 16, item 2): KubeRay's upgrade strategies, GCS fault
tolerance, the deletion delay, PodDisruptionBudgets, and the preStop drain that lets a
terminating worker finish its streams.

The drain hook's script (files/drain-ray-node.sh) is run here for real, with a fake `ray`
and `python` on PATH and a folder of fake `<pid>/cmdline` files standing for the
container's /proc, so its decisions (drain this node with the deadline, then wait exactly as
long as a Serve replica or proxy is alive) are checked without a cluster."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import helm_python as helm
import pytest

from tests.helm.netpol import selector_matches
from tests.helm.rendering import CHART, RELEASE, ci_values, merged, render_chart
from tests.helm.serve_build import deployment_infos_after_overrides as _deployment_infos_after_overrides

DRAIN_SCRIPT = (CHART / "files" / "drain-ray-node.sh").read_text()
AUTOSCALED = {"autoscaling": {"gpuWorkers": {"enabled": True}}}
INCREMENTAL = merged(AUTOSCALED, {"upgradeStrategy": {"type": "NewClusterWithIncrementalUpgrade",
                                                      "clusterUpgradeOptions": {"gatewayClassName": "istio"}}})


def _render_error(values: dict) -> str:
    with pytest.raises(helm.HelmError) as caught:
        render_chart(values)
    return str(caught.value)


# --- upgrades -------------------------------------------------------------------------------------

def test_upgrades_default_to_a_new_cluster_deleted_a_minute_after_the_switch():
    spec = render_chart().rayservice["spec"]
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}
    assert spec["rayClusterDeletionDelaySeconds"] == 60


def test_incremental_upgrade_renders_kuberays_cluster_upgrade_options(validate_rayservice):
    rayservice = render_chart(merged(INCREMENTAL, {"rayClusterDeletionDelaySeconds": 300})).rayservice
    assert rayservice["spec"]["upgradeStrategy"] == {
        "type": "NewClusterWithIncrementalUpgrade",
        "clusterUpgradeOptions": {"gatewayClassName": "istio", "maxSurgePercent": 25, "stepSizePercent": 10,
                                  "intervalSeconds": 60}}
    assert rayservice["spec"]["rayClusterDeletionDelaySeconds"] == 300
    validate_rayservice(rayservice)  # the CRD's clusterUpgradeOptions (required fields included)


def test_in_place_only_upgrades_render_strategy_none():
    assert render_chart({"upgradeStrategy": {"type": "None"}}).rayservice["spec"]["upgradeStrategy"] == {"type": "None"}


@pytest.mark.parametrize("values, message", [
    (merged(INCREMENTAL, {"upgradeStrategy": {"clusterUpgradeOptions": {"gatewayClassName": ""}}}),
     "set upgradeStrategy.clusterUpgradeOptions.gatewayClassName"),
    (merged(INCREMENTAL, {"autoscaling": {"gpuWorkers": {"enabled": False}}}), "needs autoscaling.gpuWorkers.enabled"),
    (merged(INCREMENTAL, {"upgradeStrategy": {"clusterUpgradeOptions": {"stepSizePercent": 50, "maxSurgePercent": 20}}}),
     "stepSizePercent (50) must be <= maxSurgePercent (20)"),
    (merged(INCREMENTAL, {"ingress": {"enabled": True}}), "Route clients to the Gateway KubeRay creates"),
], ids=["no gateway class", "no ray autoscaler", "step above surge", "ingress bypassing the gateway"])
def test_incremental_upgrade_is_refused_without_what_it_needs(values, message):
    assert message in _render_error(values)


# --- GCS fault tolerance ----------------------------------------------------------------------------

def test_gcs_fault_tolerance_points_the_head_at_external_redis_with_the_password_from_a_secret(validate_rayservice):
    values = {"gcsFaultTolerance": {"enabled": True, "redisAddress": "redis-master.redis.svc:6379",
                                    "redisPasswordSecret": "redis-auth"}}
    rayservice = render_chart(values).rayservice
    assert rayservice["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"] == {
        "redisAddress": "redis-master.redis.svc:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}}}
    validate_rayservice(rayservice)


def test_gcs_fault_tolerance_is_off_by_default_and_refused_without_an_address():
    assert "gcsFaultToleranceOptions" not in render_chart().rayservice["spec"]["rayClusterConfig"]
    assert "set gcsFaultTolerance.redisAddress" in _render_error({"gcsFaultTolerance": {"enabled": True}})


# --- PodDisruptionBudgets -----------------------------------------------------------------------------

def _pod_labels(rendered) -> dict[str, dict]:
    pods = {"head": rendered.head_group["template"]["metadata"]["labels"]}
    for group in rendered.worker_groups:
        pods[group["groupName"]] = group["template"]["metadata"]["labels"]
    return pods


def test_each_pdb_selects_exactly_the_head_or_one_worker_group():
    rendered = render_chart(ci_values("autoscaling-values.yaml"))
    budgets = {b["metadata"]["name"]: b for b in rendered.of_kind("PodDisruptionBudget")}
    assert set(budgets) == {f"{RELEASE}-lorafleet-head", f"{RELEASE}-lorafleet-a100", f"{RELEASE}-lorafleet-l4"}
    pods = _pod_labels(rendered)
    for name, budget in budgets.items():
        selected = {pod for pod, labels in pods.items() if selector_matches(budget["spec"]["selector"], labels)}
        assert selected == {name.removeprefix(f"{RELEASE}-lorafleet-")}, name


def test_the_head_budget_blocks_evictions_and_worker_budgets_allow_one_pod_at_a_time():
    rendered = render_chart({"podDisruptionBudget": {"workerMaxUnavailable": "25%"}})
    budgets = {b["metadata"]["name"]: b["spec"] for b in rendered.of_kind("PodDisruptionBudget")}
    assert budgets[f"{RELEASE}-lorafleet-head"]["maxUnavailable"] == 0
    assert budgets[f"{RELEASE}-lorafleet-gpu"]["maxUnavailable"] == "25%"
    assert render_chart().of_kind("PodDisruptionBudget")[1]["spec"]["maxUnavailable"] == 1


def test_no_pdbs_when_disabled():
    assert render_chart({"podDisruptionBudget": {"enabled": False}}).of_kind("PodDisruptionBudget") == []


# --- preStop drain: rendering ----------------------------------------------------------------------------

def test_workers_drain_before_they_stop_with_a_grace_period_longer_than_the_drain():
    rendered = render_chart({"drain": {"timeoutSeconds": 120}})
    for group in rendered.worker_groups:
        spec = group["template"]["spec"]
        (container,) = spec["containers"]
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/bash", "-c", DRAIN_SCRIPT,
                                                                           "drain-ray-node", "120"]
        assert spec["terminationGracePeriodSeconds"] == 150
    assert "lifecycle" not in rendered.head_group["template"]["spec"]["containers"][0]


def test_draining_replicas_get_the_drain_deadline_as_their_graceful_shutdown(no_ray_auto_connect):
    config = render_chart(merged(ci_values("autoscaling-values.yaml"), {"drain": {"timeoutSeconds": 240}})).serve_config
    infos = _deployment_infos_after_overrides(config)
    assert infos["EngineReplica"].deployment_config.graceful_shutdown_timeout_s == 240
    assert infos["Ingress"].deployment_config.graceful_shutdown_timeout_s == 240
    assert infos["EngineReplica"].deployment_config.autoscaling_config.max_replicas == 12  # still autoscaled


def test_without_the_drain_there_is_no_hook_and_replicas_keep_the_builders_shutdown(no_ray_auto_connect):
    rendered = render_chart({"drain": {"enabled": False}})
    (group,) = rendered.worker_groups
    assert "lifecycle" not in group["template"]["spec"]["containers"][0]
    assert "terminationGracePeriodSeconds" not in group["template"]["spec"]
    assert "deployments" not in rendered.serve_config["applications"][0]
    infos = _deployment_infos_after_overrides(rendered.serve_config)
    assert infos["EngineReplica"].deployment_config.graceful_shutdown_timeout_s == 10  # deployments/app.py


# --- preStop drain: the script, run ------------------------------------------------------------------------

REPLICA_TITLE = "ray::" + "ServeReplica:lorafleet:EngineReplica"  # split so this file's text never matters
PROXY_TITLE = "ray::" + "ProxyActor"


class FakeNode:
    """PATH with fake `ray` and `python`, and a fake /proc of the container."""

    def __init__(self, root: Path, node_id: str = "f00dfeed", drain_exit: int = 0):
        self.bin = root / "bin"
        self.proc = root / "proc"
        self.log = root / "ray-calls.log"
        self.bin.mkdir()
        self.proc.mkdir()
        (self.bin / "python").write_text(f"#!/bin/bash\ncat > /dev/null\necho -n '{node_id}'\n")
        (self.bin / "ray").write_text(f"#!/bin/bash\necho \"$@\" >> '{self.log}'\nexit {drain_exit}\n")
        for tool in self.bin.iterdir():
            tool.chmod(0o755)
        # Processes that must not count as Serve replicas: the hook's own bash, holding this
        # very script on its command line, and an unrelated worker.
        self.process(1, "/bin/bash", "-c", DRAIN_SCRIPT, "drain-ray-node", "60")
        self.process(2, "ray::IDLE")

    def process(self, pid: int, *argv: str) -> Path:
        folder = self.proc / str(pid)
        folder.mkdir()
        (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        return folder

    def exit(self, folder: Path) -> None:
        (folder / "cmdline").unlink()
        folder.rmdir()

    def run(self, deadline_s: int) -> subprocess.Popen:
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "RAY_ADDRESS": "fleet-head-svc.llm.svc:6379",
               "HOSTNAME": "fleet-gpu-worker-x7"}
        return subprocess.Popen(["/bin/bash", "-c", DRAIN_SCRIPT, "drain-ray-node", str(deadline_s), str(self.proc)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def drain_calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def wait_for_drain_call(self, hook: subprocess.Popen) -> None:
        for _ in range(200):
            if self.drain_calls() or hook.poll() is not None:
                return
            time.sleep(0.05)


def test_the_drain_script_never_names_the_process_titles_it_waits_for():
    # The hook's own command line holds the script: naming them would make it wait for itself.
    assert "ray::" + "ServeReplica" not in DRAIN_SCRIPT
    assert PROXY_TITLE not in DRAIN_SCRIPT


def test_the_hook_drains_its_node_and_returns_only_once_replicas_and_proxy_are_gone(tmp_path):
    node = FakeNode(tmp_path)
    engine = node.process(101, REPLICA_TITLE)
    ingress = node.process(102, "ray::" + "ServeReplica:lorafleet:Ingress")
    proxy = node.process(103, PROXY_TITLE)
    hook = node.run(deadline_s=60)
    node.wait_for_drain_call(hook)
    assert node.drain_calls() == [
        "drain-node --address fleet-head-svc.llm.svc:6379 --node-id f00dfeed --reason DRAIN_NODE_REASON_PREEMPTION "
        "--reason-message pod fleet-gpu-worker-x7 is terminating --deadline-remaining-seconds 60"]
    for still_serving in (engine, ingress, proxy):
        time.sleep(1.5)  # more than one poll of the hook: it must still be waiting
        assert hook.poll() is None, f"returned while {still_serving.name} was alive: {hook.communicate()}"
        node.exit(still_serving)
    out, err = hook.communicate(timeout=30)
    assert hook.returncode == 0, err
    assert "draining node f00dfeed" in err


def test_the_hook_gives_up_at_the_deadline_when_a_replica_never_finishes(tmp_path):
    node = FakeNode(tmp_path)
    stuck = node.process(101, REPLICA_TITLE)
    hook = node.run(deadline_s=2)
    out, err = hook.communicate(timeout=30)
    assert hook.returncode == 0, err
    assert stuck.exists() and len(node.drain_calls()) == 1


def test_the_hook_returns_at_once_when_the_drain_is_refused(tmp_path):
    node = FakeNode(tmp_path, drain_exit=1)
    node.process(101, REPLICA_TITLE)
    hook = node.run(deadline_s=600)
    out, err = hook.communicate(timeout=30)  # would wait 600 s if it ignored the refusal
    assert hook.returncode == 0
    assert "was not accepted: not waiting" in err


def test_the_hook_returns_at_once_without_a_ray_node(tmp_path):
    node = FakeNode(tmp_path, node_id="")
    node.process(101, REPLICA_TITLE)
    hook = node.run(deadline_s=600)
    out, err = hook.communicate(timeout=30)
    assert hook.returncode == 0
    assert node.drain_calls() == [] and "nothing to drain" in err
