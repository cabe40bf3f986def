"""PlacementLoop: the controller's order of operations, without Ray."""

from __future__ import annotations

from cluster.placement import PlacementLoop, PlacementSettings, ReplicaPlacement
from cluster.stats import ReplicaStats

SETTINGS = PlacementSettings(period_s=5.0, report_timeout_s=3.0, reserve_gpu_slots=0)


def stats(rid: str, requests: dict[str, int], **kw) -> ReplicaStats:
    return ReplicaStats(rid, gpu_slots=2, cpu_slots=4, per_adapter_requests=requests,
                        per_adapter_tokens={a: 100 * n for a, n in requests.items()}, **kw)


def drive(loop: PlacementLoop, until: float, replicas: list[str], start: float = 0.0) -> None:
    """Every replica reports once a second with 10 requests/s for "hot", 1 for "cold"."""
    t = start
    while t <= until:
        n = int(t)
        for rid in replicas:
            loop.report(stats(rid, {"hot": 10 * n, "cold": n}), now=t)
        loop.tick(t)
        t += 1.0


def test_plans_once_per_period_after_the_first_tick():
    loop = PlacementLoop(SETTINGS)
    planned = []
    for t in range(12):
        loop.report(stats("r0", {"hot": t}), now=float(t))
        planned.append(loop.tick(float(t)))
    assert [t for t, p in enumerate(planned) if p] == [5, 10]
    assert loop.plans == 2
    assert loop.last_plan_s >= 0


def test_report_returns_the_replicas_desired_set():
    loop = PlacementLoop(SETTINGS)
    assert loop.report(stats("r0", {}), now=0.0) == ReplicaPlacement()
    drive(loop, 5.0, ["r0", "r1"])
    desired = loop.report(stats("r0", {"hot": 50, "cold": 5}), now=5.5)
    assert desired == loop.desired.for_replica("r0")
    assert "hot" in loop.desired.table()


def test_silent_replica_is_dropped_and_its_adapters_re_placed():
    loop = PlacementLoop(SETTINGS)
    drive(loop, 5.0, ["r0", "r1"])
    before = loop.desired
    assert before.for_replica("r1").gpu
    drive(loop, 10.0, ["r0"], start=6.0)  # r1 stops reporting at t=5
    assert "r1" not in loop.fleet(10.0)
    after = loop.desired
    assert "r1" not in after
    assert after.gpu_copies().keys() >= before.for_replica("r1").gpu


def test_last_actions_describe_what_the_fleet_still_has_to_do():
    loop = PlacementLoop(SETTINGS)
    drive(loop, 5.0, ["r0"])
    loaded = {(a.adapter, a.tier.value) for a in loop.last_actions}
    assert ("hot", "gpu") in loaded  # nothing is resident on the reported replica


def test_force_plan_plans_now():
    loop = PlacementLoop(SETTINGS)
    loop.report(stats("r0", {}), now=0.0)
    assert loop.tick(0.0, force_plan=True)
    assert loop.plans == 1


def test_an_adapter_a_replica_could_not_load_is_no_longer_placed():
    """A deleted adapter keeps decaying demand for minutes; once a replica reports it
    unloadable the planner stops giving it a slot (the test fleet found a deleted
    registry adapter still planned)."""
    loop = PlacementLoop(SETTINGS)
    drive(loop, 5.0, ["r0", "r1"])
    assert "cold" in loop.desired.table()
    n = 6
    loop.report(stats("r0", {"hot": 10 * n, "cold": n}, unloadable=("cold",)), now=6.0)
    loop.report(stats("r1", {"hot": 10 * n, "cold": n}), now=6.0)
    loop.tick(6.0, force_plan=True)
    assert "cold" not in loop.desired.table()
    assert "hot" in loop.desired.table()


def test_unloadable_survives_the_stats_round_trip():
    s = stats("r0", {}, unloadable=("gone@3",))
    assert ReplicaStats.from_dict(s.to_dict()).unloadable == ("gone@3",)
