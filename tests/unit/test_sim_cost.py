"""CostModel: the defaults, the step formula and the calibration JSON format."""

from __future__ import annotations

import json

import pytest

from cluster.sim.cost import CostModel, fit_step


def test_gpu_like_matches_its_description():
    c = CostModel.gpu_like()
    assert c.step_s(1, 1) == pytest.approx(0.025, abs=2e-4)
    assert c.step_s(64, 1) == pytest.approx(0.040, abs=2e-4)
    assert c.step_s(64, 2) - c.step_s(64, 1) == pytest.approx(0.002)
    assert (c.store_load_s, c.cpu_to_gpu_s) == (0.15, 0.01)


def test_from_json_overrides_only_what_it_names(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"format": "lorafleet-cost-model/1", "source": "test", "gpu_slots": 2, "cpu_slots": 4}))
    c = CostModel.from_json(path)
    assert (c.gpu_slots, c.cpu_slots) == (2, 4)
    assert c.step_base_s == CostModel.gpu_like().step_base_s


def test_step_measurements_are_fitted():
    truth = CostModel(step_base_s=0.03, step_per_seq_s=0.001, step_per_adapter_s=0.004)
    points = [{"batch": b, "adapters": a, "step_s": truth.step_s(b, a)} for b in (1, 8, 32) for a in (1, 4)]
    c = CostModel.from_dict({"step_measurements": points})
    assert c.step_base_s == pytest.approx(0.03)
    assert c.step_per_seq_s == pytest.approx(0.001)
    assert c.step_per_adapter_s == pytest.approx(0.004)


def test_fit_with_one_adapter_count_needs_the_adapter_coefficient():
    points = [{"batch": b, "adapters": 1, "step_s": 0.02 + 0.001 * b + 0.005} for b in (1, 16, 64)]
    with pytest.raises(ValueError, match="step_per_adapter_s"):
        fit_step(points)
    fitted = fit_step(points, per_adapter=0.005)
    assert fitted["step_base_s"] == pytest.approx(0.02)
    assert fitted["step_per_seq_s"] == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"gpu_slot": 4}, "unknown cost model keys"),
        ({"format": "other/2"}, "unknown cost model format"),
        ({"gpu_slots": 8, "cpu_slots": 4}, "cpu_slots"),
        ({"step_base_s": -1}, ">= 0"),
        ({"step_measurements": [{"batch": 1, "adapters": 1}]}, "batch, adapters and step_s"),
        (
            {
                "step_base_s": 0.1,
                "step_measurements": [{"batch": b, "adapters": a, "step_s": 0.1} for b in (1, 2) for a in (1, 2)],
            },
            "not both",
        ),
    ],
)
def test_invalid_calibrations_are_rejected(data, message):
    with pytest.raises(ValueError, match=message):
        CostModel.from_dict(data)


def test_round_trip_through_json(tmp_path):
    c = CostModel(gpu_slots=3, cpu_slots=9, store_load_s=0.5)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(c.to_dict()))
    assert CostModel.from_json(path) == c


def test_capacity_shrinks_with_longer_outputs():
    c = CostModel.gpu_like()
    assert c.capacity_rps(256, 64) > c.capacity_rps(256, 256) > 0
