"""The simulator as a twin of the live fleet: replaying the live runner's protocol,
the one-level fit, the host term from a CPU split, the served cost file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench.sim_calibration import host_per_token_from_split, served_cost_file
from cluster.sim.calibration import LiveProtocol, fit_decreasing, protocol_trace, relative_error
from cluster.sim.cost import CostModel
from cluster.sim.workload import generate
from tests.sim_toys import TOY, TOY_ADAPTER_NAMES as NAMES, TOY_WORKLOAD as WORKLOAD

REPO = Path(__file__).resolve().parents[2]



# ---- the served cost file ---------------------------------------------------------------


def test_the_served_cost_file_is_the_offline_one_plus_the_host_term_and_loads(tmp_path):
    offline_file = REPO / "bench" / "results" / "cost-model-cpu.json"
    data = served_cost_file(offline_file, 0.0071234, "fitted on a test")
    path = tmp_path / "served.json"
    path.write_text(json.dumps(data))
    served, offline = CostModel.from_json(path), CostModel.from_json(offline_file)
    assert served == dataclasses.replace(offline, host_per_token_s=0.007123)
    assert data["source"] == "fitted on a test"


# ---- replaying the live runner's protocol ------------------------------------------------


def test_the_protocol_trace_is_the_live_runners_two_phases_on_one_clock():
    protocol = LiveProtocol(warmup_s=10, duration_s=20, gap_s=5)
    trace, measured = protocol_trace(WORKLOAD, NAMES, protocol)
    # what loadgen.run_load sends: the generator's requests, re-based per phase, each
    # phase ending with (and dropping) the first request beyond its window
    source = list(zip(range(400), generate(WORKLOAD, names=NAMES)))
    warm = [r for _, r in source if r.arrival_s - source[0][1].arrival_s < 10]
    rest = [r for _, r in source][len(warm) + 1:]
    window = [r for r in rest if r.arrival_s - rest[0].arrival_s < 20]
    assert measured == len(window) and len(trace) == len(warm) + len(window)
    assert [r.adapter for r in trace] == [r.adapter for r in warm + window]
    assert trace[len(warm)].arrival_s == protocol.measured_start_s == 15
    assert all(r.arrival_s < 10 for r in trace[: len(warm)])
    assert all(15 <= r.arrival_s < 35 for r in trace[len(warm):])
    assert [r.arrival_s for r in trace] == sorted(r.arrival_s for r in trace)


def test_without_a_warm_up_the_measured_window_starts_at_zero():
    trace, measured = protocol_trace(WORKLOAD, NAMES, LiveProtocol(warmup_s=0, duration_s=10))
    assert measured == len(trace) and trace[0].arrival_s == 0.0


# ---- the fit and the CPU split -----------------------------------------------------------


def test_the_fit_finds_where_a_decreasing_measure_meets_the_target():
    assert fit_decreasing(lambda x: 100 / (1 + 50 * x), 40.0, 0.0, 1.0) == pytest.approx(0.03, rel=1e-2)
    assert fit_decreasing(lambda x: 10 - x, 20.0, 0.0, 1.0) == 0.0  # not needed: the lower end
    with pytest.raises(ValueError, match="widen"):
        fit_decreasing(lambda x: 10 - x, 5.0, 0.0, 1.0)


def test_relative_error_is_signed_against_the_live_value():
    assert relative_error(110.0, 100.0) == pytest.approx(0.10)
    assert relative_error(90.0, 100.0) == pytest.approx(-0.10)


def test_the_cpu_split_gives_the_window_scaled_cpu_per_token_minus_what_the_offline_fit_charges():
    split = {
        "warmup_s": 5.0,
        "runs": [
            {"kind": "vllm", "results": {"stream-4": {"window_s": 20.0, "cpu": {"cpu_ms_per_token": 99.0}}}},
            {"kind": "lorafleet", "results": {"stream-4": {
                "window_s": 20.0,
                "cpu": {"cpu_ms_per_token": 10.0, "by_component_ms_per_token": {"vLLM worker (model)": 3.0}},
            }}},
        ],
    }
    host, how = host_per_token_from_split(split, TOY, cell="stream-4", mean_prompt=64, output_tokens=32)
    window_only_ms = 10.0 * 20 / 25
    offline_ms = 1000 * (TOY.step_s(4, 1) / 4 + TOY.prefill_per_token_s * 64 / 32)  # one GPU slot: 1 adapter
    assert host * 1000 == pytest.approx(window_only_ms - offline_ms)
    assert how["cpu_ms_per_token_window_only"] == pytest.approx(window_only_ms)
