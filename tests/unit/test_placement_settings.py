"""PlacementSettings: validation, documentation, and mirroring into pydantic config."""

from __future__ import annotations

import dataclasses
import typing
import warnings

import pytest
from pydantic import Field, create_model

from cluster.placement import FrozenPins, PlacementSettings


def test_every_field_is_described():
    for f in dataclasses.fields(PlacementSettings):
        assert f.metadata.get("description"), f"{f.name} has no description"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"period_s": 0},
        {"report_timeout_s": -1},
        {"half_life_s": 0},
        {"max_replicas_per_adapter": 0},
        {"demand_floor": -0.1},
        {"reserve_gpu_slots": -1},
        {"warm_copies": -1},
        {"reserve_cpu_slots": -1},
        {"hysteresis": 0.9},
        {"confidence_z": -1},
        {"balance_tolerance": 1.0},
        {"pins": {"a": 0}},
        {"pins": {"a": 1.5}},
    ],
)
def test_invalid_values_are_rejected(kwargs):
    with pytest.raises(ValueError):
        PlacementSettings(**kwargs)


def test_pins_are_frozen_and_hashable():
    settings = PlacementSettings(pins={"a": 2})
    assert isinstance(settings.pins, FrozenPins)
    assert settings.pins == {"a": 2}
    assert hash(settings) == hash(PlacementSettings(pins={"a": 2}))
    with pytest.raises(TypeError):
        settings.pins["b"] = 1  # type: ignore[index]


def test_settings_mirror_into_a_pydantic_model_and_back():
    """deployments/config.py builds its config model from the dataclass fields the
    same way; this keeps PlacementSettings mirrorable (types pydantic understands,
    defaults it can dump)."""
    hints = typing.get_type_hints(PlacementSettings)
    fields = {
        f.name: (hints[f.name], Field(default=f.default, description=f.metadata["description"]))
        for f in dataclasses.fields(PlacementSettings)
    }
    model = create_model("PlacementSettingsModel", **fields)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "default value is not JSON serializable"
        assert PlacementSettings(**model().model_dump()) == PlacementSettings()
        custom = model.model_validate({"pins": {"vip": 3}, "hysteresis": 2.0})
        assert PlacementSettings(**custom.model_dump()) == PlacementSettings(pins={"vip": 3}, hysteresis=2.0)
        schema = model.model_json_schema()
    assert schema["properties"]["pins"]["description"]
    assert schema["properties"]["pins"]["default"] == {}


def test_settings_copy_and_pickle():
    import copy
    import pickle

    settings = PlacementSettings(pins={"a": 2})
    assert copy.deepcopy(settings) == settings
    assert pickle.loads(pickle.dumps(settings)).pins == {"a": 2}
