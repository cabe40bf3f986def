"""The GPU capacity check (issue 16, item 4): the engine replicas that must run at once
(num_replicas, or Serve's autoscaling minimum) x GPUs per replica must fit the GPUs the
worker groups can ever have: their `replicas` pods while KubeRay's autoscaler is off,
`maxReplicas` while it is on, and a replica's GPUs all on one pod."""

from __future__ import annotations

import helm_python as helm
import pytest

from tests.helm.rendering import render_chart


def _group(name: str, gpus: int, replicas: int, max_replicas: int, min_replicas: int = 0) -> dict:
    return {"name": name, "replicas": replicas, "minReplicas": min_replicas, "maxReplicas": max_replicas, "gpus": gpus,
            "resources": {}, "shmSize": "1Gi"}


def _values(groups: list[dict], num_replicas: int, replica_gpus: float = 1, gpu_autoscaler: bool = False,
            serve_min: int | None = None) -> dict:
    values = {"workerGroups": groups, "lorafleet": {"deployment": {"num_replicas": num_replicas, "replica_gpus": replica_gpus}},
              "autoscaling": {"gpuWorkers": {"enabled": gpu_autoscaler}}}
    if serve_min is not None:
        values["autoscaling"]["engineReplicas"] = {"enabled": True, "minReplicas": serve_min, "maxReplicas": max(serve_min, 1)}
    return values


def _fits(values: dict) -> bool:
    try:
        render_chart(values)
    except helm.HelmError as err:
        assert "engine replicas" in str(err), err
        return False
    return True


CASES = {
    # The case: 4 one-GPU replicas, 2 one-GPU workers, autoscaler off: stays Pending forever.
    "4 replicas, 2 one-GPU pods, autoscaler off": (_values([_group("gpu", 1, 2, 4)], 4), False),
    "same, autoscaler on (reaches 4 pods)": (_values([_group("gpu", 1, 2, 4)], 4, gpu_autoscaler=True), True),
    "4 replicas, 4 one-GPU pods, autoscaler off": (_values([_group("gpu", 1, 4, 4)], 4), True),
    "5 replicas, max 4 pods, autoscaler on": (_values([_group("gpu", 1, 2, 4)], 5, gpu_autoscaler=True), False),
    "two groups add up (2x2 + 1x1 GPUs), autoscaler off": (
        _values([_group("a100", 2, 2, 2), _group("l4", 1, 1, 8)], 5), True),
    "two groups, one GPU short, autoscaler off": (
        _values([_group("a100", 2, 2, 2), _group("l4", 1, 1, 8)], 6), False),
    "2-GPU replicas on 1-GPU pods never fit, autoscaler on": (
        _values([_group("gpu", 1, 4, 8)], 1, replica_gpus=2, gpu_autoscaler=True), False),
    "2-GPU replicas: a 3-GPU pod holds one": (_values([_group("gpu", 3, 2, 2)], 2, replica_gpus=2), True),
    "2-GPU replicas: 3-GPU pods waste a GPU each": (_values([_group("gpu", 3, 2, 2)], 3, replica_gpus=2), False),
    "half-GPU replicas: two per GPU": (_values([_group("gpu", 1, 2, 2)], 4, replica_gpus=0.5), True),
    "half-GPU replicas: one too many": (_values([_group("gpu", 1, 2, 2)], 5, replica_gpus=0.5), False),
    "0.3-GPU replicas: three per GPU": (_values([_group("gpu", 1, 1, 1)], 3, replica_gpus=0.3), True),
    "serve autoscaling: only its minimum must fit": (_values([_group("gpu", 1, 2, 2)], 24, serve_min=2), True),
    "serve autoscaling: a minimum that does not fit": (_values([_group("gpu", 1, 2, 2)], 1, serve_min=3), False),
    "CPU engines (replica_gpus 0) are not counted": (_values([_group("gpu", 1, 1, 1)], 8, replica_gpus=0), True),
}


@pytest.mark.parametrize("values, fits", CASES.values(), ids=CASES.keys())
def test_engine_replicas_render_only_when_the_worker_groups_can_hold_them(values, fits):
    assert _fits(values) is fits


def test_the_refusal_with_the_autoscaler_off_names_the_pods_that_exist_and_what_to_change():
    with pytest.raises(helm.HelmError) as caught:
        render_chart(_values([_group("gpu", 1, 2, 4)], 4))
    message = str(caught.value)
    assert "4 engine replicas (lorafleet.deployment.num_replicas) x 1 GPUs" in message
    assert "hold at most 2 such replicas (gpu: 2 pods x 1 per 1-GPU pod" in message
    assert "autoscaling.gpuWorkers is off" in message and "raise replicas" in message


def test_the_refusal_with_the_autoscaler_on_names_max_replicas():
    with pytest.raises(helm.HelmError) as caught:
        render_chart(_values([_group("gpu", 1, 2, 4)], 5, gpu_autoscaler=True))
    assert "raise maxReplicas" in str(caught.value) and "gpu: 4 pods" in str(caught.value)


def test_notes_warn_when_serve_may_autoscale_beyond_what_the_groups_hold():
    values = _values([_group("gpu", 1, 2, 2)], 1, serve_min=1)
    values["autoscaling"]["engineReplicas"]["maxReplicas"] = 6
    notes = render_chart(values).notes
    assert "hold at most 2 engine replicas; Ray Serve may ask for 6" in notes
    values["autoscaling"]["engineReplicas"]["maxReplicas"] = 2
    assert "Ray Serve may ask for" not in render_chart(values).notes


def test_two_autoscalers_for_the_engine_deployment_are_refused():
    values = _values([_group("gpu", 1, 4, 4)], 2, serve_min=1)
    values["lorafleet"]["autoscaling"] = {"enabled": True, "settings": {"min_replicas": 1, "max_replicas": 4}}
    with pytest.raises(helm.HelmError, match="two autoscalers"):
        render_chart(values)
