"""The fleet controller's placement loop, without Ray: reports in, desired sets out."""

import asyncio

from cluster.stats import ReplicaStats
from deployments.serve.controller import FleetController

Controller = FleetController.func_or_class


def _stats(rid, requests):
    return ReplicaStats(replica_id=rid, gpu_slots=4, cpu_slots=8, per_adapter_requests=requests,
                        per_adapter_tokens={a: 32 * n for a, n in requests.items()}).to_dict()


def test_controller_plans_from_reports_and_hands_each_replica_its_share():
    async def scenario():
        controller = Controller(report_period_s=0.01, placement={"period_s": 0.05, "report_timeout_s": 5})
        counts = {"poet": 0, "haiku": 0}
        desired = {}
        for _ in range(40):
            counts = {"poet": counts["poet"] + 20, "haiku": counts["haiku"] + 5}
            for rid in ("r1", "r2"):
                desired[rid] = await controller.report(_stats(rid, counts))
            await asyncio.sleep(0.01)
        return controller, desired

    controller, desired = asyncio.run(scenario())
    placement = asyncio.run(controller.placement())
    assert placement["enabled"] and placement["plans"] >= 1
    held = {a for d in desired.values() for a in d["gpu"] + d["cpu"]}
    assert {"poet", "haiku"} <= held
    assert desired["r1"] == placement["replicas"]["r1"]


def test_controller_without_placement_only_collects_stats():
    controller = Controller(report_period_s=1.0, placement=None)
    assert asyncio.run(controller.report(_stats("r1", {"poet": 1}))) is None
    assert [s["replica_id"] for s in asyncio.run(controller.snapshot())] == ["r1"]
    assert asyncio.run(controller.placement())["enabled"] is False
