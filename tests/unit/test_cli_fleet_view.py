"""What `lorafleet top` computes from two reads of the admin API."""

from deployments.cli.fleet_view import Snapshot, build_view, diff_actions, registry_served_id


def _stats(rid, ts, gpu=(), cpu=(), loading=(), requests=None, tokens=0, **extra):
    return {"replica_id": rid, "node_id": "n" * 56, "ts": ts, "gpu_slots": 2, "cpu_slots": 4,
            "gpu_resident": list(gpu), "cpu_resident": list(cpu), "loading": list(loading),
            "per_adapter_requests": requests or {}, "generated_tokens": tokens, **extra}


PLACEMENT = {"enabled": True, "plans": 7, "replicas": {"r1": {"gpu": ["poet"], "cpu": ["pirate"]}, "r2": {"gpu": ["haiku@2"], "cpu": []}}}
REGISTRY = [{"id": "poet", "latest": "1", "source": "legacy", "servable": True},
            {"id": "haiku", "latest": "2", "source": "upload", "servable": True},
            {"id": "cold", "latest": "1", "source": "upload", "servable": False}]


def test_rows_show_each_replicas_tiers_plan_and_rates():
    before = Snapshot(100.0, [_stats("r1", 10.0, gpu=["poet"], cpu=["poet"], requests={"poet": 2, "": 1}, tokens=40),
                              _stats("r2", 10.0)], PLACEMENT, REGISTRY)
    after = Snapshot(102.0, [_stats("r1", 12.0, gpu=["poet"], cpu=["poet", "pirate"], requests={"poet": 6, "": 3}, tokens=140,
                                    queue_len=1, running=2, kv_cache_usage=0.25),
                             _stats("r2", 12.0, loading=["haiku@2"])], PLACEMENT, REGISTRY)
    view = build_view(before, after)
    r1, r2 = view.replicas
    assert (r1.replica_id, r1.gpu, r1.cpu, r1.loading) == ("r1", ("poet",), ("pirate",), ())
    assert (r1.planned_gpu, r1.planned_cpu) == (("poet",), ("pirate",))
    assert (r1.queued, r1.running, r1.kv_cache_usage) == (1, 2, 0.25)
    assert r1.tokens_per_s == 50.0 and r1.requests_per_s == 3.0
    assert r2.loading == ("haiku@2",) and r2.planned_gpu == ("haiku@2",)
    assert view.plans == 7 and view.base_requests_per_s == 1.0
    rows = {a.name: a for a in view.adapters}
    assert rows["poet"].requests_per_s == 2.0 and rows["poet"].where == (("r1", "gpu"),)
    assert rows["pirate"].where == (("r1", "cpu"),) and rows["pirate"].planned == ("r1",)
    assert rows["haiku@2"].where == (("r2", "loading"),)
    assert rows["cold@1"].where == () and not rows["cold@1"].servable
    assert [a.name for a in view.adapters][0] == "poet"  # busiest first


def test_one_read_gives_rows_without_rates():
    view = build_view(None, Snapshot(1.0, [_stats("r1", 1.0, gpu=["poet"], requests={"poet": 9})], PLACEMENT, REGISTRY))
    assert view.replicas[0].tokens_per_s is None and view.adapters[0].requests_per_s is None
    assert view.actions == ()


def test_residency_changes_between_reads_are_the_placement_actions():
    before = [_stats("r1", 1, gpu=["a"], cpu=["a", "b"]), _stats("gone", 1, gpu=["x"])]
    after = [_stats("r1", 2, gpu=["b"], cpu=["b", "c"], loading=["d"]), _stats("new", 2, gpu=["y"])]
    changes = {(a.replica_id, a.adapter): a.change for a in diff_actions(before, after, at=5.0)}
    assert changes == {("r1", "a"): "evicted from gpu", ("r1", "b"): "moved cpu -> gpu",
                       ("r1", "c"): "loaded into cpu", ("r1", "d"): "loading"}


def test_a_large_registry_is_cut_to_the_busiest_and_resident_adapters():
    registry = [{"id": f"a{i:04d}", "latest": "1", "source": "legacy", "servable": True} for i in range(500)]
    before = Snapshot(0, [_stats("r1", 0, requests={"a0400": 1})], {"enabled": False}, registry)
    after = Snapshot(1, [_stats("r1", 1, gpu=["a0300"], requests={"a0400": 5})], {"enabled": False}, registry)
    view = build_view(before, after, max_adapters=5)
    assert [a.name for a in view.adapters][:2] == ["a0400", "a0300"]
    assert view.hidden_adapters == 495 and view.plans is None


def test_the_registry_names_latest_versions_as_replicas_report_them():
    assert registry_served_id({"id": "poet", "latest": "1", "source": "legacy"}) == "poet"
    assert registry_served_id({"id": "poet", "latest": "3", "source": "upload"}) == "poet@3"
