"""diff(desired, observed): the loads and unloads that reach the desired placement."""

from __future__ import annotations

import pytest

from cluster.placement import DesiredPlacement, Load, ReplicaPlacement, Unload, diff
from cluster.stats import ReplicaStats, Tier

GPU, CPU, ABSENT = Tier.GPU, Tier.CPU, Tier.ABSENT


def want(gpu=(), cpu=()) -> ReplicaPlacement:
    return ReplicaPlacement(frozenset(gpu), frozenset(cpu))


def seen(gpu=(), cpu=(), loading=(), gpu_slots=2, cpu_slots=4, **kw) -> ReplicaStats:
    """Observed replica "r"; `gpu` and `cpu` least recently used first."""
    return ReplicaStats("r", gpu_slots=gpu_slots, cpu_slots=cpu_slots, gpu_resident=tuple(gpu),
                        cpu_resident=tuple(cpu), loading=tuple(loading), **kw)


@pytest.mark.parametrize(
    ("desired", "observed", "actions"),
    [
        pytest.param(want(gpu="a"), seen(), [Load("a", "r", GPU, ABSENT)], id="gpu-from-store"),
        pytest.param(want(gpu="a"), seen(cpu="a"), [Load("a", "r", GPU, CPU)], id="gpu-from-host"),
        pytest.param(want(gpu="a"), seen(gpu="a"), [], id="gpu-already"),
        pytest.param(want(gpu="a"), seen(loading="a"), [], id="gpu-arriving"),
        pytest.param(want(cpu="a"), seen(), [Load("a", "r", CPU)], id="cpu-from-store"),
        pytest.param(want(cpu="a"), seen(gpu="a"), [], id="cpu-wanted-already-better"),
        pytest.param(want(), seen(gpu="xy", cpu="p"), [], id="extras-stay-while-they-fit"),
        pytest.param(
            want(gpu="a"), seen(gpu="xy"),
            [Load("a", "r", GPU, ABSENT), Unload("x", "r", GPU)],
            id="room-made-least-recently-used-first",
        ),
        pytest.param(
            want(gpu="a", cpu="x"), seen(gpu="xy"),
            [Load("a", "r", GPU, ABSENT), Unload("y", "r", GPU)],
            id="adapter-wanted-warm-leaves-the-gpu-last",
        ),
        pytest.param(
            want(gpu="ab"), seen(gpu="xy", cpu="b"),
            [Load("a", "r", GPU, ABSENT), Load("b", "r", GPU, CPU), Unload("x", "r", GPU), Unload("y", "r", GPU)],
            id="two-slots-freed",
        ),
        pytest.param(
            want(cpu="c"), seen(gpu="a", cpu="pq", cpu_slots=3),
            [Load("c", "r", CPU), Unload("p", "r", CPU)],
            id="host-room-made-least-recently-used-first",
        ),
        pytest.param(
            want(gpu="a"), seen(gpu="xy", cpu="pq", cpu_slots=4),
            [Load("a", "r", GPU, ABSENT), Unload("x", "r", GPU), Unload("p", "r", CPU)],
            id="demoted-adapter-stays-in-host-older-one-leaves",
        ),
    ],
)
def test_diff_of_one_replica(desired, observed, actions):
    assert diff(DesiredPlacement({"r": desired}), {"r": observed}) == actions


@pytest.mark.parametrize(
    ("desired", "observed", "actions"),
    [
        pytest.param(
            want(), seen(gpu="x", cpu="p"),
            [Unload("x", "r", GPU), Unload("p", "r", CPU), Unload("x", "r", CPU)],
            id="everything-undesired-leaves",
        ),
        pytest.param(
            want(cpu="x"), seen(gpu="x"),
            [Unload("x", "r", GPU)],
            id="demoted-to-host",
        ),
    ],
)
def test_exact_diff_removes_everything_not_desired(desired, observed, actions):
    assert diff(DesiredPlacement({"r": desired}), {"r": observed}, exact=True) == actions


def test_unhealthy_replica_gets_no_actions_and_unreported_one_gets_every_load():
    desired = DesiredPlacement({"dead": want(gpu="a"), "new": want(gpu="b", cpu="c")})
    observed = {"dead": ReplicaStats("dead", gpu_slots=1, healthy=False)}
    assert diff(desired, observed) == [Load("b", "new", GPU), Load("c", "new", CPU)]


def test_replica_missing_from_the_plan_is_left_alone():
    assert diff(DesiredPlacement(), {"r": seen(gpu="xy", cpu="pq")}) == []


def test_actions_are_grouped_by_replica_in_id_order():
    desired = DesiredPlacement({"r2": want(gpu="a"), "r1": want(gpu="b")})
    observed = {
        "r1": ReplicaStats("r1", gpu_slots=1, cpu_slots=2),
        "r2": ReplicaStats("r2", gpu_slots=1, cpu_slots=2),
    }
    assert [a.replica_id for a in diff(desired, observed)] == ["r1", "r2"]
