"""The Helm chart's `helm test` hook against the real fleet: the command the chart renders
into its test pod, run here with the pod's environment pointed at the session's fleet
instead of KubeRay's serve Service (tests/helm runs it against a fake API)."""

from __future__ import annotations

import subprocess
import sys

from tests.helm.rendering import render_chart


def _run_hook(fleet, model: str) -> subprocess.CompletedProcess:
    (pod,) = render_chart({"auth": {"enabled": False}, "tests": {"model": model, "maxTokens": 4}}).of_kind("Pod")
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    env["LORAFLEET_URL"] = fleet.base_url
    python, *args = container["command"]
    assert python == "python"
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)


def test_the_helm_test_hook_passes_against_a_real_fleet(fleet):
    for model in (fleet.base_model, "poet"):
        result = _run_hook(fleet, model)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith(f"OK: {model} answered ") and "from replica " in result.stdout


def test_the_helm_test_hook_fails_for_a_model_the_fleet_does_not_serve(fleet):
    result = _run_hook(fleet, "no-such-adapter")
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr
