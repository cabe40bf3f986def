"""`lorafleet sim` (cluster.sim.cli.main) and the scenario files it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.sim.cli import main
from cluster.sim.scenario import load_scenario, scenario_from_dict

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = sorted((REPO / "bench" / "workloads").glob("sim-*.yaml"))
AUTOSCALE = sorted((REPO / "bench" / "workloads").glob("autoscale-*.yaml"))


def test_the_expected_scenarios_exist():
    names = {p.stem for p in WORKLOADS}
    assert {"sim-zipf-0.5", "sim-zipf-1.0", "sim-zipf-1.5", "sim-drift", "sim-burst", "sim-scale"} <= names


@pytest.mark.parametrize("path", WORKLOADS, ids=[p.stem for p in WORKLOADS])
def test_every_scenario_file_is_valid(path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.policies
    assert scenario.workload.requests > 0


def test_the_issues_autoscale_scenarios_exist_and_are_what_they_say():
    by_letter = {p.stem.split("-")[1]: load_scenario(p) for p in AUTOSCALE}
    assert set(by_letter) == {"a", "b", "c", "d", "e"}
    for s in by_letter.values():
        assert s.config.autoscaling is not None and s.config.ray_autoscaling is not None and s.ray_targets
        assert len(set(s.seeds)) >= 3
        assert s.config.max_ongoing_requests == s.config.cost.max_num_seqs
    a = by_letter["a"]
    assert a.workload.adapters == 10_000 and a.config.cost.cpu_slots == 64
    ranks = {c.rank for c in by_letter["b"].catalog.classes}
    assert min(ranks) == 8 and max(ranks) == 128
    assert all(c.store_load_s == (0.5, 2.0) for c in by_letter["c"].catalog.classes)
    assert by_letter["d"].workload.cycle.peak == 4.0 and by_letter["d"].workload.drift is not None
    assert by_letter["e"].workload.burst.share == 0.3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"workload": {}, "policies": ["lorafleet"]}, "autoscaling section"),
        ({"workload": {}, "policies": ["multiplex+ray_autoscale:8"]}, "ray_autoscaling section"),
        ({"workload": {}, "policies": ["multiplex+ray_autoscale:x"]}, "needs a number"),
        ({"workload": {}, "autoscaling": {"max_replica": 3}}, "unknown autoscaling keys"),
    ],
)
def test_autoscaling_mistakes_are_errors(data, message):
    with pytest.raises(ValueError, match=message):
        scenario_from_dict(data)


def test_scale_scenario_is_the_issue_target():
    s = load_scenario(REPO / "bench" / "workloads" / "sim-scale.yaml")
    assert (s.config.replicas, s.workload.adapters, s.workload.requests) == (1000, 10_000, 1_000_000)
    assert len(s.policies) == 1


def test_cli_runs_policies_on_one_trace_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main([
        "--workload", str(REPO / "bench" / "workloads" / "sim-smoke.yaml"),
        "--policies", "pow2,adapter_affinity+controller,bound",
        "--requests", "400",
        "--seeds", "1,2",
        "--out", str(out),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "goodput/s" in printed and "bound" in printed
    doc = json.loads(out.read_text())
    assert [(r["seed"], r["policy"]) for r in doc["results"]] == [
        (seed, p) for seed in (1, 2) for p in ("pow2", "adapter_affinity+controller", "bound")
    ]
    assert all(r["completed"] == r["requests"] == 400 for r in doc["results"])
    assert doc["config"]["cost"]["gpu_slots"] == 8
    assert doc["commit"] and doc["machine"]["nproc"]
    pow2 = next(e for e in doc["summary"] if e["policy"] == "pow2")
    values = [r["goodput_rps"] for r in doc["results"] if r["policy"] == "pow2"]
    assert pow2["seeds"] == [1, 2]
    assert pow2["goodput_rps"] == {"median": sum(values) / 2, "min": min(values), "max": max(values)}


@pytest.mark.parametrize(
    "argv",
    [
        ["--workload", "does-not-exist.yaml"],
        ["--workload", str(REPO / "bench" / "workloads" / "sim-smoke.yaml"), "--policies", "nope"],
    ],
)
def test_cli_reports_bad_input_with_exit_code_2(argv, capsys):
    assert main(argv) == 2
    assert "lorafleet sim:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"fleet": {"replicas": 2}}, "workload"),
        ({"workload": {}, "flet": {}}, "unknown key"),
        ({"workload": {}, "fleet": {"replica": 2}}, "unknown key"),
        ({"workload": {}, "policies": ["pow3"]}, "unknown policy"),
        ({"workload": {}, "policies": ["pow2+controler"]}, "unknown policy part"),
        ({"workload": {}, "fleet": {"max_ongoing_requests": 128}}, "max_ongoing_reason"),
        ({"workload": {}, "run": {"seed": 1, "seeds": [2]}}, "not both"),
    ],
)
def test_scenario_mistakes_are_errors(data, message):
    with pytest.raises(ValueError, match=message):
        scenario_from_dict(data)


def test_the_in_flight_cap_may_differ_from_the_batch_only_with_a_reason():
    s = scenario_from_dict({"workload": {}, "fleet": {"max_ongoing_requests": 128, "max_ongoing_reason": "test"}})
    assert s.config.max_ongoing_requests == 128
    assert scenario_from_dict({"workload": {}}).config.max_ongoing_requests == s.config.cost.max_num_seqs


@pytest.mark.parametrize("path", WORKLOADS, ids=[p.stem for p in WORKLOADS])
def test_every_scenario_runs_at_least_three_seeds(path):
    assert len(set(load_scenario(path).seeds)) >= 3


def test_each_seed_drives_its_own_trace_and_router():
    s = scenario_from_dict({"workload": {"seed": 7}, "run": {"seeds": [1, 2]}})
    assert [(config.seed, w.seed) for config, (w,) in map(s.for_seed, s.seeds)] == [(1, 1), (2, 2)]


def test_scenario_sweeps_keep_the_arrival_window():
    s = scenario_from_dict({"workload": {"rate": 10, "requests": 1000}, "rates": [5, 20]})
    assert [(w.rate, w.requests) for w in s.workloads()] == [(5, 500), (20, 2000)]


def test_cost_model_file_and_overrides(tmp_path):
    (tmp_path / "cal.json").write_text(json.dumps({"gpu_slots": 2, "cpu_slots": 6}))
    s = scenario_from_dict(
        {"workload": {}, "fleet": {"cost_model": "cal.json", "cost": {"cpu_slots": 10}}}, base_dir=tmp_path
    )
    assert (s.config.cost.gpu_slots, s.config.cost.cpu_slots) == (2, 10)
