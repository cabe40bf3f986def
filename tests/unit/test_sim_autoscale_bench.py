"""The autoscale benchmark driver's rules: which Ray target is 'its best', how long a
flash crowd took to recover, and a whole (tiny) benchmark document."""

from __future__ import annotations

import json

import pytest

from cluster.sim.autoscale import best_target, main, recovery_s


@pytest.mark.parametrize(
    ("sweep", "best"),
    [
        pytest.param([(4, 0.995, 900), (8, 0.992, 700), (16, 0.95, 400)], 8, id="fewest replicas among those meeting 99%"),
        pytest.param([(4, 0.97, 900), (8, 0.98, 700), (16, 0.95, 400)], 8, id="none meets it: the highest attainment"),
        pytest.param([(4, 0.9808, 2632), (8, 0.9806, 1505), (16, 0.94, 750)], 8,
                     id="none meets it: attainments within half a point count as equal, fewer replicas win"),
        pytest.param([(4, 0.99, 700), (8, 0.99, 700)], 4, id="a tie: the lower target"),
    ],
)
def test_rays_best_target(sweep, best):
    assert best_target([
        {"target": t, "slo_attainment": a, "replica_seconds_per_1k_requests": r} for t, a, r in sweep
    ]) == best


def test_recovery_is_the_end_of_the_last_bucket_below_the_slo_after_the_crowd():
    timeline = {"t": [0, 10, 20, 30, 40, 50], "slo_attainment": [0.5, 1.0, 0.9, 0.98, 1.0, 0.995], "requests": [5] * 6}
    assert recovery_s(timeline, at_s=10, end_s=60, width=10) == 30  # 30-40 was the last bad bucket
    assert recovery_s(timeline, at_s=40, end_s=60, width=10) == 0
    assert recovery_s({}, at_s=0, end_s=1, width=10) is None


def _tiny(tmp_path):
    scenario = tmp_path / "autoscale-tiny.yaml"
    scenario.write_text(
        "fleet: {replicas: 2, cost_model: gpu_like, cost: {gpu_slots: 2, cpu_slots: 4}, startup_s: 10}\n"
        "run: {seeds: [1, 2, 3], warmup_s: 20, timeline_s: 10}\n"
        "workload: {adapters: 30, rate: 4, requests: 400, burst: {at_s: 60, share: 0.3}}\n"
        "autoscaling: {max_replicas: 12, startup_s: 10}\n"
        "ray_autoscaling: {max_replicas: 12}\n"
        "ray_targets: [4, 8]\n"
    )
    return scenario


def test_a_tiny_benchmark_writes_every_policy_the_issue_names(tmp_path, capsys):
    scenario = _tiny(tmp_path)
    out = tmp_path / "r.json"
    assert main(["--workload", str(scenario), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    for name in ("lorafleet", "ray_serve_llm_default", "llmd_lora_affinity", "per_adapter_deployments", "bound"):
        entry = doc["policies"][name]
        for key in ("slo_attainment", "goodput_rps", "replica_seconds_per_1k_requests"):
            assert set(entry[key]) == {"median", "min", "max"}, (name, key)
        assert entry["seeds"] == [1, 2, 3]
    assert doc["policies"]["ray_serve_llm_default"]["target_ongoing_requests"] in (4, 8)
    assert len(doc["policies"]["ray_serve_llm_default"]["sweep"]) == 2
    assert doc["commit"] and doc["machine"]["nproc"]
    assert len(doc["expectations"]["lorafleet_recovery_s"]) == 3
    bound = doc["policies"]["bound"]["replica_seconds_per_1k_requests"]["median"]
    assert doc["policies"]["lorafleet"]["replica_seconds_per_1k_requests"]["min"] > bound


def test_a_resumed_benchmark_reads_cached_runs_back_instead_of_simulating(tmp_path, monkeypatch, capsys):
    import cluster.sim.autoscale as bench

    scenario, cache = _tiny(tmp_path), tmp_path / "cache"
    assert main(["--workload", str(scenario), "--out", str(tmp_path / "a.json"), "--cache", str(cache)]) == 0

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated again")

    monkeypatch.setattr(bench, "simulate", no_simulation)
    assert main(["--workload", str(scenario), "--out", str(tmp_path / "b.json"), "--cache", str(cache)]) == 0
    a, b = (json.loads((tmp_path / n).read_text())["policies"] for n in ("a.json", "b.json"))
    assert a["lorafleet"]["replica_seconds_per_1k_requests"] == b["lorafleet"]["replica_seconds_per_1k_requests"]
