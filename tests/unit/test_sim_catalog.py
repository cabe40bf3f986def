"""The simulated adapters: classes of ranks and modules, their costs and read times."""

from __future__ import annotations

from collections import Counter

import pytest

from cluster.lora_cost import lora_cost
from cluster.sim.catalog import AdapterClass, CatalogSpec
from cluster.sim.workload import adapter_names


@pytest.mark.parametrize(
    ("rank", "modules", "cost"),
    [
        pytest.param(8, 2, 1.0, id="reference: rank 8 on q/v"),
        pytest.param(64, 7, 3.79, id="rank 64, all seven projections: the calibration's 3.8x"),
        pytest.param(128, 7, 5.0, id="rank 128, all seven"),
    ],
)
def test_lora_cost_follows_the_calibration(rank, modules, cost):
    assert lora_cost(rank, modules) == pytest.approx(cost, rel=0.01)


def test_lora_cost_grows_with_rank_and_with_modules():
    assert lora_cost(8, 2) < lora_cost(16, 2) < lora_cost(16, 4) < lora_cost(128, 4)


def test_classes_are_assigned_by_share_with_their_costs_and_read_times():
    spec = CatalogSpec.from_dict({
        "seed": 3,
        "classes": [
            {"share": 0.7, "rank": 8, "modules": 2},
            {"share": 0.3, "rank": 64, "modules": 7, "store_load_s": [0.5, 2.0]},
        ],
    })
    names = adapter_names(5000)
    catalog = spec.build(names)
    counts = Counter(catalog.classes[a].rank for a in names)
    assert counts[64] / 5000 == pytest.approx(0.3, abs=0.03)
    heavy = [a for a in names if catalog.classes[a].rank == 64]
    assert all(catalog.cost(a) == pytest.approx(lora_cost(64, 7)) for a in heavy)
    assert all(0.5 <= catalog.load_s[a] <= 2.0 for a in heavy)
    light = next(a for a in names if catalog.classes[a].rank == 8)
    assert catalog.cost(light) == 1.0 and light not in catalog.load_s
    assert catalog.cost(None) == 0.0
    assert spec.build(names) == catalog  # seeded


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"classes": [{"share": 0.5}]}, "add up to 1"),
        ({"classes": [{"share": 1.0, "rank": 0}]}, "rank"),
        ({"classes": [{"share": 1.0, "ranks": 8}]}, "unknown adapter class keys"),
        ({"class": []}, "unknown catalog keys"),
        ({"classes": [{"share": 1.0, "store_load_s": [2.0, 1.0]}]}, "store_load_s"),
    ],
)
def test_catalog_mistakes_are_errors(data, message):
    with pytest.raises(ValueError, match=message):
        CatalogSpec.from_dict(data)
