"""`lorafleet sim` (cluster.sim.cli.main) and the scenario files it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.sim.cli import main
from cluster.sim.scenario import load_scenario, scenario_from_dict

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = sorted((REPO / "bench" / "workloads").glob("sim-*.yaml"))


def test_the_expected_scenarios_exist():
    names = {p.stem for p in WORKLOADS}
    assert {"sim-zipf-0.5", "sim-zipf-1.0", "sim-zipf-1.5", "sim-drift", "sim-burst", "sim-scale"} <= names


@pytest.mark.parametrize("path", WORKLOADS, ids=[p.stem for p in WORKLOADS])
def test_every_scenario_file_is_valid(path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.policies
    assert scenario.workload.requests > 0


def test_scale_scenario_is_the_issue_target():
    s = load_scenario(REPO / "bench" / "workloads" / "sim-scale.yaml")
    assert (s.config.replicas, s.workload.adapters, s.workload.requests) == (1000, 10_000, 1_000_000)
    assert len(s.policies) == 1


def test_cli_runs_policies_on_one_trace_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main([
        "--workload", str(REPO / "bench" / "workloads" / "sim-smoke.yaml"),
        "--policies", "pow2,adapter_affinity+controller,oracle",
        "--requests", "400",
        "--out", str(out),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "goodput/s" in printed and "oracle" in printed
    doc = json.loads(out.read_text())
    assert [r["policy"] for r in doc["results"]] == ["pow2", "adapter_affinity+controller", "oracle"]
    assert all(r["completed"] == r["requests"] == 400 for r in doc["results"])
    assert doc["config"]["cost"]["gpu_slots"] == 8


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
    ],
)
def test_scenario_mistakes_are_errors(data, message):
    with pytest.raises(ValueError, match=message):
        scenario_from_dict(data)


def test_scenario_sweeps_keep_the_arrival_window():
    s = scenario_from_dict({"workload": {"rate": 10, "requests": 1000}, "rates": [5, 20]})
    assert [(w.rate, w.requests) for w in s.workloads()] == [(5, 500), (20, 2000)]


def test_cost_model_file_and_overrides(tmp_path):
    (tmp_path / "cal.json").write_text(json.dumps({"gpu_slots": 2, "cpu_slots": 6}))
    s = scenario_from_dict(
        {"workload": {}, "fleet": {"cost_model": "cal.json", "cost": {"cpu_slots": 10}}}, base_dir=tmp_path
    )
    assert (s.config.cost.gpu_slots, s.config.cost.cpu_slots) == (2, 10)
