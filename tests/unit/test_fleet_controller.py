"""The fleet controller's placement loop, without Ray: reports in, desired sets out."""

import asyncio

from cluster.stats import ReplicaStats
from deployments.serve.controller import FleetController

Controller = FleetController.func_or_class


def _stats(rid, requests, base="m"):
    return ReplicaStats(replica_id=rid, gpu_slots=4, cpu_slots=8, per_adapter_requests=requests, base=base,
                        per_adapter_tokens={a: 32 * n for a, n in requests.items()}).to_dict()


PLACEMENT = {"period_s": 0.05, "report_timeout_s": 5}


def test_controller_plans_from_reports_and_hands_each_replica_its_share():
    async def scenario():
        controller = Controller(report_period_s=0.01, placement={"m": PLACEMENT})
        counts = {"poet": 0, "haiku": 0}
        desired = {}
        for _ in range(40):
            counts = {"poet": counts["poet"] + 20, "haiku": counts["haiku"] + 5}
            for rid in ("r1", "r2"):
                desired[rid] = (await controller.report(_stats(rid, counts)))["desired"]
            await asyncio.sleep(0.01)
        return controller, desired

    controller, desired = asyncio.run(scenario())
    placement = asyncio.run(controller.placement())
    assert placement["enabled"] and placement["plans"] >= 1
    held = {a for d in desired.values() for a in d["gpu"] + d["cpu"]}
    assert {"poet", "haiku"} <= held
    assert desired["r1"] == placement["replicas"]["r1"]


def test_each_bases_adapters_are_planned_only_over_that_bases_replicas():
    """Two bases, one controller: a replica of base `b` is never handed an adapter whose
    demand came from base `a`'s replicas, however idle it is."""
    async def scenario():
        controller = Controller(report_period_s=0.01, placement={"a": PLACEMENT, "b": PLACEMENT})
        desired = {}
        for step in range(1, 41):
            for rid in ("a1", "a2"):
                desired[rid] = (await controller.report(_stats(rid, {"poet": 20 * step, "haiku": 5 * step}, "a")))["desired"]
            desired["b1"] = (await controller.report(_stats("b1", {"wide-upper": 10 * step}, "b")))["desired"]
            await asyncio.sleep(0.01)
        return controller, desired

    controller, desired = asyncio.run(scenario())
    placement = asyncio.run(controller.placement())
    held = {rid: set(d["gpu"] + d["cpu"]) for rid, d in desired.items()}
    assert {"poet", "haiku"} <= held["a1"] | held["a2"]
    assert held["b1"] == {"wide-upper"}
    assert "wide-upper" not in held["a1"] | held["a2"]
    assert set(placement["bases"]["a"]["replicas"]) == {"a1", "a2"}
    assert set(placement["bases"]["b"]["replicas"]) == {"b1"}


def test_controller_without_placement_only_collects_stats():
    controller = Controller(report_period_s=1.0, placement=None)
    assert asyncio.run(controller.report(_stats("r1", {"poet": 1})))["desired"] is None
    assert [s["replica_id"] for s in asyncio.run(controller.snapshot())] == ["r1"]
    assert asyncio.run(controller.placement())["enabled"] is False


def test_an_adapter_one_engine_refused_is_unservable_for_every_replica():
    controller = Controller(report_period_s=1.0, placement=None)
    assert asyncio.run(controller.report(_stats("r1", {}), ["f-poison"]))["unservable"] == ["f-poison"]
    assert asyncio.run(controller.report(_stats("r2", {})))["unservable"] == ["f-poison"]


def test_aborted_usage_reaches_the_ingress_that_holds_the_bill_and_no_other():
    from deployments.engine.protocol import AbortedUsage

    async def scenario():
        controller = Controller(report_period_s=1.0, placement=None)
        waiting = asyncio.ensure_future(controller.take_aborted_usage("ingress-a", 5.0))
        await asyncio.sleep(0)
        await controller.record_aborted_usage([AbortedUsage("r" * 32, "ingress-a", 7, 3),
                                               AbortedUsage("s" * 32, "ingress-b", 1, 1)])
        mine = await asyncio.wait_for(waiting, 1.0)  # woken by the report, not by the timeout
        nothing = await controller.take_aborted_usage("ingress-a", 0.01)
        theirs = await controller.take_aborted_usage("ingress-b", 0.01)
        return mine, nothing, theirs

    mine, nothing, theirs = asyncio.run(scenario())
    assert [(r.request_id, r.prompt_tokens, r.completion_tokens) for r in mine] == [("r" * 32, 7, 3)]
    assert nothing == [] and [r.ingress_id for r in theirs] == ["ingress-b"]


def _autoscaling(**settings):
    from dataclasses import asdict

    from cluster.autoscaling import ReplicaProfile

    return {"m": {"settings": {"min_replicas": 1, "max_replicas": 3, "period_s": 0.01, "startup_s": 0.0,
                               "downscale_delay_s": 0.05, **settings},
                  "profile": asdict(ReplicaProfile(max_num_seqs=4, gpu_slots=2, cpu_slots=4)), "initial": 1}}


def _busy(rid, requests, queue_len=0):
    return ReplicaStats(replica_id=rid, gpu_slots=2, cpu_slots=4, per_adapter_requests=requests, base="m",
                        per_adapter_tokens={a: 32 * n for a, n in requests.items()}, queue_len=queue_len).to_dict()


def test_requests_the_ingresses_hold_back_raise_the_target_every_replica_relays():
    async def scenario():
        controller = Controller(report_period_s=0.01, placement={"m": PLACEMENT}, autoscaling=_autoscaling())
        counts, answers = {"poet": 0}, []
        for i in range(30):
            counts = {"poet": counts["poet"] + 2}
            await controller.take_aborted_usage("ingress-a", 0.0, held_back={"m": 40})  # 40 requests without a seat
            answers.append(await controller.report(_busy("r1", counts)))
            await asyncio.sleep(0.01)
        return answers

    answers = asyncio.run(scenario())
    assert answers[0]["target_replicas"] == 1  # the initial count until a decision
    assert answers[-1]["target_replicas"] == 3  # the queue asks for more; capped at max_replicas


def test_without_held_back_requests_or_demand_the_target_stays():
    async def scenario():
        controller = Controller(report_period_s=0.01, placement={"m": PLACEMENT}, autoscaling=_autoscaling())
        answers = []
        for _ in range(30):
            await controller.take_aborted_usage("ingress-a", 0.0, held_back={"m": 0})
            answers.append(await controller.report(_busy("r1", {})))
            await asyncio.sleep(0.01)
        return answers

    assert {a["target_replicas"] for a in asyncio.run(scenario())} == {1}


def test_without_autoscaling_no_target_is_handed_out():
    async def scenario():
        controller = Controller(report_period_s=0.01, placement={"m": PLACEMENT})
        return await controller.report(_busy("r1", {"poet": 1}))

    assert "target_replicas" not in asyncio.run(scenario())
