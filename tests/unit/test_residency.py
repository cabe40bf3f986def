"""The replica's mirror of vLLM's GPU-slot and CPU-cache LRUs."""

from cluster.residency import ResidencyTracker
from cluster.stats import ReplicaStats, Tier


def test_gpu_slots_hold_the_most_recently_run_adapters():
    r = ResidencyTracker(gpu_slots=2, cpu_slots=3)
    for name in ["a", "b", "c"]:
        r.loaded(name)
    r.ran(["a"])
    r.ran(["b"])
    r.ran(["c"])
    assert r.gpu_resident() == ("b", "c")
    assert r.cpu_resident() == ("a",)


def test_cpu_eviction_also_leaves_the_gpu_and_rereads_count_as_loads():
    r = ResidencyTracker(gpu_slots=1, cpu_slots=2)
    r.loaded("a")
    r.ran(["a"])
    r.loaded("b")
    r.loaded("c")  # evicts a (least recently used) from the CPU cache
    assert "a" not in r.gpu_resident() and "a" not in r.cpu_resident()
    assert r.loads == 3
    r.ran(["a"])  # vLLM must read a from the store again
    assert r.loads == 4
    assert r.gpu_resident() == ("a",)


def test_stats_round_trip_and_tier_lookup():
    stats = ReplicaStats(replica_id="r1", gpu_slots=2, cpu_slots=4, gpu_resident=("a",), cpu_resident=("b",), loading=("c",))
    again = ReplicaStats.from_dict({**stats.to_dict(), "field_from_newer_replica": 1})
    assert again == stats
    assert [again.tier_of(x) for x in "abcd"] == [Tier.GPU, Tier.CPU, Tier.LOADING, Tier.ABSENT]
