"""ClusterView (the per-snapshot index) and InflightTracker."""

from __future__ import annotations

from cluster.routing import ClusterView, InflightTracker, Residency
from cluster.stats import ReplicaStats, Tier


def fleet() -> list[ReplicaStats]:
    return [
        ReplicaStats("r0", gpu_slots=2, gpu_resident=("a", "b"), cpu_resident=("c",)),
        ReplicaStats("r1", gpu_slots=2, gpu_resident=("c",), cpu_resident=("a",), loading=("d",)),
        ReplicaStats("r2", gpu_slots=2, loading=("a",)),
        ReplicaStats("sick", gpu_slots=2, gpu_resident=("a",), healthy=False),
    ]


def test_holders_best_tier_first_and_unhealthy_excluded():
    view = ClusterView(fleet())
    assert view.holders("a") == ("r0", "r1", "r2")
    assert view.holders("a", (Tier.GPU, Tier.CPU)) == ("r0", "r1")
    assert list(view.holders_in("a", Tier.LOADING)) == ["r2"]
    assert view.holders("nobody") == ()


def test_routable_ids_exclude_unhealthy_include_no_stats():
    view = ClusterView(fleet(), no_stats=["fresh"])
    assert view.routable_ids == ("r0", "r1", "r2", "fresh")
    assert view.replica_ids == ("r0", "r1", "r2", "sick", "fresh")
    assert len(view) == 5 and "fresh" in view and "sick" in view and "gone" not in view
    assert view.stats("fresh") is None
    assert view.residency("a", "fresh") is Residency.UNKNOWN


def test_no_stats_id_that_also_has_stats_is_not_unknown():
    view = ClusterView(fleet(), no_stats=["r0", "r0"])
    assert view.replica_ids.count("r0") == 1
    assert view.residency("a", "r0") is Residency.GPU


def test_repeated_replica_id_keeps_the_last_report():
    view = ClusterView(
        [ReplicaStats("r0", gpu_resident=("a",)), ReplicaStats("r0", cpu_resident=("a",))]
    )
    assert view.residency("a", "r0") is Residency.CPU
    assert len(view) == 1


def test_with_placement_shares_snapshot_and_leaves_original_alone():
    view = ClusterView(fleet(), placement={"x": ["r2"]})
    newer = view.with_placement({"x": ["r0", "r0", "r1"]})
    assert view.desired("x") == ("r2",)
    assert newer.desired("x") == ("r0", "r1")
    assert newer.holders("a") == view.holders("a")
    inflight = InflightTracker()
    assert newer.candidate("r0", "x", inflight).desired
    assert not view.candidate("r0", "x", inflight).desired


def test_empty_placement_entries_are_ignored():
    view = ClusterView(fleet(), placement={"x": [], "y": set()})
    assert view.desired("x") == () and view.desired("y") == ()


def test_fewest_adapters_ids():
    view = ClusterView(fleet())
    assert view.fewest_adapters_ids == ("r2",)  # loading does not count as holding
    assert ClusterView(no_stats=["a", "b"]).fewest_adapters_ids == ("a", "b")


def test_inflight_tracker_counts_assign_and_finish():
    t = InflightTracker()
    for rid in ["r0", "r0", "r1"]:
        t.on_assign(rid)
    assert (t.count("r0"), t.count("r1"), t.count("r2")) == (2, 1, 0)
    t.on_finish("r0")
    assert t.count("r0") == 1 and t.total() == 2
    assert t.as_dict() == {"r0": 1, "r1": 1}


def test_inflight_tracker_counts_running_adapters_per_replica():
    t = InflightTracker()
    for rid, adapter in [("r0", "a"), ("r0", "a"), ("r0", "b"), ("r0", None), ("r1", "a")]:
        t.on_assign(rid, adapter)
    assert dict(t.active_adapters("r0")) == {"a": 2, "b": 1}  # the base model is not an adapter
    assert t.count("r0") == 4
    t.on_finish("r0", "b")
    t.on_finish("r0", "a")
    assert dict(t.active_adapters("r0")) == {"a": 1}
    t.on_finish("r0", "b")  # stray: never below zero, never resurrects "b"
    assert dict(t.active_adapters("r0")) == {"a": 1}
    t.forget("r0")
    assert not t.active_adapters("r0") and dict(t.active_adapters("r1")) == {"a": 1}


def test_a_candidate_waits_for_a_slot_only_when_other_adapters_fill_every_slot():
    view = ClusterView([ReplicaStats(replica_id="r0", gpu_slots=2, cpu_slots=4)])
    t = InflightTracker()
    t.on_assign("r0", "a")
    assert not view.candidate("r0", "c", t).slot_wait  # one slot still free
    t.on_assign("r0", "b")
    assert view.candidate("r0", "c", t).slot_wait  # a and b run: c waits
    assert not view.candidate("r0", "a", t).slot_wait  # a joins the running batch
    assert not view.candidate("r0", None, t).slot_wait  # the base model needs no slot
    assert not ClusterView(no_stats=["r9"]).candidate("r9", "c", t).slot_wait  # unknown slots: no claim


def test_inflight_tracker_never_negative_and_forgets():
    t = InflightTracker()
    t.on_finish("r0")  # stray finish (e.g. after a restart of the router)
    assert t.count("r0") == 0
    t.on_assign("r0")
    assert t.count("r0") == 1
    t.on_assign("r1")
    t.forget("r1")
    assert t.count("r1") == 0 and t.as_dict() == {"r0": 1}


def test_a_draining_replica_takes_no_new_requests_but_stays_in_the_view():
    stats = [ReplicaStats("r0", gpu_slots=2, gpu_resident=("a",)),
             ReplicaStats("leaving", gpu_slots=2, gpu_resident=("a",), draining=True)]
    view = ClusterView(stats)
    assert view.routable_ids == ("r0",)
    assert view.holders("a") == ("r0",)
    assert "leaving" in view
