"""The placement planner: replication, packing, balance, hysteresis, pins, failures."""

from __future__ import annotations

from random import Random

import pytest

from cluster.placement import (
    AdapterDemand,
    DesiredPlacement,
    PlacementSettings,
    PlacementSnapshot,
    ReplicaPlacement,
    plan,
)
from cluster.stats import ReplicaStats

# Most tests switch the noise margin and the reserve slot off so the expected
# numbers are plain arithmetic; tests of those two knobs switch them on.
PLAIN = PlacementSettings(reserve_gpu_slots=0, reserve_cpu_slots=0, confidence_z=0.0, warm_copies=1)


def fleet(n: int, gpu: int = 4, cpu: int = 8, **kw) -> list[ReplicaStats]:
    return [ReplicaStats(f"r{i}", gpu_slots=gpu, cpu_slots=cpu, **kw) for i in range(n)]


def tokens(**rates: float) -> dict[str, AdapterDemand]:
    """Demand by token rate; one request per 100 tokens."""
    return {a: AdapterDemand(t / 100, t) for a, t in rates.items()}


def run(replicas, demand, settings=PLAIN, previous=None) -> DesiredPlacement:
    return plan(PlacementSnapshot(replicas, demand), settings, previous)


def copies(p: DesiredPlacement) -> dict[str, int]:
    return p.gpu_copies()


def warm(p: DesiredPlacement) -> dict[str, int]:
    out: dict[str, int] = {}
    for rp in p.values():
        for a in rp.cpu:
            out[a] = out.get(a, 0) + 1
    return out


def holders(p: DesiredPlacement, adapter: str) -> set[str]:
    return {rid for rid, rp in p.items() if adapter in rp.gpu}


def expected_load(p: DesiredPlacement, demand) -> dict[str, float]:
    n = copies(p)
    return {
        rid: sum(demand[a].token_rate / n[a] for a in rp.gpu)
        for rid, rp in p.items()
    }


# ---- replication in proportion to demand -------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "rates", "settings", "expected"),
    [
        pytest.param(10, dict(a=500, b=300, c=200), PLAIN, dict(a=5, b=3, c=2), id="shares-x-replicas"),
        pytest.param(10, dict(a=940, b=50, c=10), PLAIN, dict(a=10, b=1, c=1), id="rounded-up-at-least-one"),
        pytest.param(4, dict(a=1000, b=1), PLAIN, dict(a=4, b=1), id="capped-by-fleet"),
        pytest.param(
            10,
            dict(a=900, b=100),
            PlacementSettings(reserve_gpu_slots=0, confidence_z=0, max_replicas_per_adapter=3),
            dict(a=3, b=1),
            id="max-replicas-per-adapter",
        ),
    ],
)
def test_gpu_copies_follow_the_share_of_the_token_rate(replicas, rates, settings, expected):
    assert copies(run(fleet(replicas), tokens(**rates), settings)) == expected


def test_adapters_below_the_demand_floor_are_not_placed():
    demand = {"hot": AdapterDemand(5.0, 500), "rare": AdapterDemand(0.0005, 0.05)}
    p = run(fleet(2), demand, PlacementSettings(reserve_gpu_slots=0, demand_floor=0.001))
    assert "rare" not in p.table()
    assert "hot" in p.table()


def test_request_rate_is_the_weight_when_no_tokens_are_reported():
    demand = {"a": AdapterDemand(9.0, 0.0), "b": AdapterDemand(1.0, 0.0)}
    assert copies(run(fleet(10), demand)) == {"a": 9, "b": 1}


# ---- packing under slots ---------------------------------------------------------------


@pytest.mark.parametrize("gpu", [1, 2, 4])
@pytest.mark.parametrize("cpu_extra", [0, 3])
@pytest.mark.parametrize("reserve", [0, 1])
@pytest.mark.parametrize("n_adapters", [3, 40])
def test_plans_never_exceed_slots(gpu, cpu_extra, reserve, n_adapters):
    rng = Random(gpu * 100 + cpu_extra * 10 + reserve + n_adapters)
    demand = tokens(**{f"a{i}": rng.uniform(1, 100) / (i + 1) for i in range(n_adapters)})
    settings = PlacementSettings(reserve_gpu_slots=reserve, reserve_cpu_slots=0, warm_copies=2)
    p = run(fleet(6, gpu, gpu + cpu_extra), demand, settings)
    planned = max(1, gpu - reserve)
    for rp in p.values():
        assert len(rp.gpu) <= planned
        assert len(rp.cpu) <= cpu_extra
        assert not rp.gpu & rp.cpu


def test_scarce_slots_go_to_the_hottest_the_next_go_warm_the_rest_nowhere():
    demand = tokens(a=500, b=400, c=200, d=100, e=50, f=25)
    # 2 replicas x 1 GPU slot, 1 host-only slot each (cpu_slots counts the GPU one);
    # a's share x 2 replicas = 0.78, so one copy each for a and b
    p = run(fleet(2, gpu=1, cpu=2), demand)
    assert copies(p) == {"a": 1, "b": 1}
    assert warm(p) == {"c": 1, "d": 1}
    assert not {"e", "f"} & set(p.table())


def test_warm_copies_go_round_first_copies_before_second_ones():
    demand = tokens(a=800, b=100, c=50)
    # 2 replicas x 1 GPU slot (a), 2 host-only slots each: b and c get two copies
    two = PlacementSettings(reserve_gpu_slots=0, reserve_cpu_slots=0, warm_copies=2)
    p = run(fleet(2, gpu=1, cpu=3), demand, two)
    assert warm(p) == {"b": 2, "c": 2}
    p = run(fleet(2, gpu=1, cpu=2), tokens(a=800, b=100, c=50, d=20), two)
    assert warm(p) == {"b": 1, "c": 1}  # room for two copies: first copies first


def test_reserve_keeps_slots_free_for_the_unplanned_tail():
    demand = tokens(**{f"a{i}": 100 for i in range(20)})
    p = run(fleet(4, gpu=4, cpu=4), demand, PlacementSettings(reserve_gpu_slots=1))
    assert all(len(rp.gpu) == 3 for rp in p.values())
    # but never the last slot of a replica
    p = run(fleet(4, gpu=1, cpu=1), demand, PlacementSettings(reserve_gpu_slots=1))
    assert all(len(rp.gpu) == 1 for rp in p.values())
    # host memory keeps its own reserve
    p = run(fleet(4, gpu=1, cpu=6), demand, PlacementSettings(reserve_gpu_slots=0, reserve_cpu_slots=2))
    assert all(len(rp.cpu) == 3 for rp in p.values())


# ---- balance -------------------------------------------------------------------------


def test_expected_load_is_balanced_across_replicas():
    rng = Random(7)
    demand = tokens(**{f"a{i:02d}": rng.uniform(10, 100) for i in range(24)})
    p = run(fleet(6, gpu=6, cpu=6), demand)
    loads = expected_load(p, demand).values()
    mean = sum(loads) / len(loads)
    assert max(loads) <= 1.25 * mean + 1e-9
    assert min(loads) >= 0.75 * mean - 1e-9


def test_copies_of_one_adapter_land_on_distinct_replicas():
    p = run(fleet(5), tokens(a=1000, b=10))
    assert len(holders(p, "a")) == copies(p)["a"] == 5


# ---- hysteresis: no flapping ------------------------------------------------------------


def zipf_demand(n: int, seed: int = 0, samples_window: float = 0.0) -> dict[str, AdapterDemand]:
    rng = Random(seed)
    return {
        f"a{i:03d}": AdapterDemand(rng.uniform(0.5, 1.5) / (i + 1), rng.uniform(50, 150) / (i + 1), samples_window)
        for i in range(n)
    }


def perturbed(demand, factor_range, seed=1):
    rng = Random(seed)
    lo, hi = factor_range
    return {
        a: AdapterDemand(d.req_rate * rng.uniform(lo, hi), d.token_rate * rng.uniform(lo, hi), d.window_s)
        for a, d in demand.items()
    }


@pytest.mark.parametrize("settings", [PLAIN, PlacementSettings()], ids=["plain", "defaults"])
@pytest.mark.parametrize("n_replicas,n_adapters", [(4, 10), (8, 60), (16, 300)])
def test_same_input_twice_gives_the_same_plan(settings, n_replicas, n_adapters):
    replicas = fleet(n_replicas, gpu=4, cpu=12)
    demand = zipf_demand(n_adapters)
    first = run(replicas, demand, settings)
    assert run(replicas, demand, settings, previous=first) == first
    assert run(replicas, demand, settings) == first  # pure: no hidden state


@pytest.mark.parametrize("settings", [PLAIN, PlacementSettings()], ids=["plain", "defaults"])
@pytest.mark.parametrize("seed", range(5))
def test_small_perturbation_of_demand_moves_nothing(settings, seed):
    replicas = fleet(8, gpu=4, cpu=12)
    demand = zipf_demand(80, seed)
    first = run(replicas, demand, settings)
    again = run(replicas, perturbed(demand, (0.9, 1.1), seed), settings, previous=first)
    assert again == first


def test_the_plan_converges_when_the_fleet_follows_it():
    """With the replicas holding what was planned, planning again changes nothing."""
    demand = zipf_demand(50)
    replicas = fleet(6, gpu=4, cpu=10)
    first = run(replicas, demand)
    followed = [
        ReplicaStats(s.replica_id, gpu_slots=4, cpu_slots=10,
                     gpu_resident=tuple(sorted(first[s.replica_id].gpu)),
                     cpu_resident=tuple(sorted(first[s.replica_id].cpu)))
        for s in replicas
    ]
    assert run(followed, demand, previous=first) == first


def test_large_shift_of_demand_moves_adapters():
    replicas = fleet(4, gpu=1, cpu=1)
    before = tokens(a=400, b=300, c=200, d=100, e=10)
    first = run(replicas, before)
    assert "e" not in copies(first)
    after = tokens(a=400, b=300, c=200, d=100, e=2000)  # e is now the hottest
    second = run(replicas, after, previous=first)
    assert copies(second).get("e", 0) >= 1
    assert "d" not in copies(second)  # the coldest incumbent made room


@pytest.mark.parametrize(
    ("challenger", "displaces"),
    [(130, False), (149, False), (151, True), (300, True)],
)
def test_a_challenger_must_beat_the_incumbent_by_the_hysteresis_factor(challenger, displaces):
    replicas = fleet(1, gpu=1, cpu=1)
    settings = PlacementSettings(reserve_gpu_slots=0, hysteresis=1.5, confidence_z=0.0)
    first = run(replicas, tokens(inc=100, ch=50), settings)
    assert copies(first) == {"inc": 1}
    second = run(replicas, tokens(inc=100, ch=challenger), settings, previous=first)
    assert ("ch" in copies(second)) is displaces


@pytest.mark.parametrize(
    ("samples", "displaces"),
    [(4, False), (10_000, True)],
)
def test_noise_margin_protects_incumbents_from_noisy_challengers(samples, displaces):
    """Both seen a handful of times: 2x more is within noise. Seen thousands of
    times: 2x is real."""
    replicas = fleet(1, gpu=1, cpu=1)
    settings = PlacementSettings(reserve_gpu_slots=0, hysteresis=1.5, confidence_z=1.0)
    window = 100.0

    def d(req_count: float) -> AdapterDemand:
        rate = req_count / window
        return AdapterDemand(rate, rate * 100, window)

    first = run(replicas, {"inc": d(samples), "ch": d(samples / 2)}, settings)
    second = run(replicas, {"inc": d(samples), "ch": d(samples * 2)}, settings, previous=first)
    assert ("ch" in copies(second)) is displaces


@pytest.mark.parametrize(
    ("previous_copies", "new_share", "expected"),
    [
        pytest.param(3, 0.4, 3, id="ideal-4-within-band-keeps-3"),
        pytest.param(3, 0.6, 6, id="ideal-6-outside-band-becomes-6"),
        pytest.param(6, 0.45, 6, id="ideal-5-within-band-keeps-6"),
        pytest.param(6, 0.2, 2, id="ideal-2-outside-band-becomes-2"),
    ],
)
def test_copy_count_changes_only_outside_the_hysteresis_band(previous_copies, new_share, expected):
    replicas = fleet(10, gpu=2, cpu=2)
    previous = DesiredPlacement(
        {f"r{i}": ReplicaPlacement(frozenset({"hot"} if i < previous_copies else set())) for i in range(10)}
    )
    demand = tokens(hot=1000 * new_share, other=1000 * (1 - new_share))
    assert copies(run(replicas, demand, previous=previous))["hot"] == expected


# ---- pins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pins", "rates", "expected"),
    [
        pytest.param({"vip": 2}, dict(a=1000), {"vip": 2, "a": 4}, id="pinned-without-demand"),
        pytest.param({"a": 3}, dict(a=100, b=900), {"a": 3, "b": 4}, id="pin-raises-count"),
        pytest.param({"vip": 9}, dict(a=1000), {"vip": 4, "a": 4}, id="pin-capped-by-fleet"),
    ],
)
def test_pins_set_a_minimum_of_gpu_copies(pins, rates, expected):
    settings = PlacementSettings(reserve_gpu_slots=0, confidence_z=0, pins=pins)
    assert copies(run(fleet(4, gpu=2, cpu=2), tokens(**rates), settings)) == expected


def test_pins_win_over_hotter_adapters_when_slots_are_scarce():
    settings = PlacementSettings(reserve_gpu_slots=0, pins={"vip": 1})
    p = run(fleet(1, gpu=1, cpu=1), tokens(hot=1000), settings)
    assert copies(p) == {"vip": 1}


# ---- failures and fleet changes ----------------------------------------------------------


def test_dead_replica_gets_nothing_and_its_adapters_are_re_placed():
    demand = tokens(**{f"a{i}": 100 - i for i in range(5)})  # one copy each
    replicas = fleet(4, gpu=2, cpu=2)
    first = run(replicas, demand)
    lost = first["r1"].gpu
    assert lost
    replicas[1] = ReplicaStats("r1", gpu_slots=2, cpu_slots=2, healthy=False)
    second = run(replicas, demand, previous=first)
    assert second["r1"] == ReplicaPlacement()
    assert copies(second) == copies(first)  # same counts, on the survivors
    for rid in ("r0", "r2", "r3"):
        assert first[rid].gpu <= second[rid].gpu  # survivors keep what they had


def test_new_empty_replica_gets_a_share_in_one_pass():
    demand = tokens(**{f"a{i}": 100 for i in range(12)})
    first = run(fleet(3, gpu=4, cpu=4), demand)
    grown = fleet(4, gpu=4, cpu=4)
    second = run(grown, demand, previous=first)
    assert len(second["r3"].gpu) >= 2
    loads = expected_load(second, demand)
    assert loads["r3"] >= 0.75 * sum(loads.values()) / 4
    moved = sum(len(first[r].gpu - second[r].gpu) for r in ("r0", "r1", "r2"))
    assert moved <= len(second["r3"].gpu)  # only what the newcomer took moved


def test_observed_residency_is_kept_at_controller_start():
    replicas = fleet(3, gpu=1, cpu=1)
    replicas[2] = ReplicaStats("r2", gpu_slots=1, cpu_slots=1, gpu_resident=("b",))
    p = run(replicas, tokens(a=100, b=100, c=100))
    assert "b" in p["r2"].gpu


@pytest.mark.parametrize(
    "replicas",
    [
        pytest.param([], id="empty"),
        pytest.param(fleet(3, healthy=False), id="all-unhealthy"),
    ],
)
def test_no_healthy_replica_gives_an_empty_plan(replicas):
    p = run(replicas, tokens(a=10))
    assert all(rp == ReplicaPlacement() for rp in p.values())
    assert set(p) == {s.replica_id for s in replicas}


def test_plan_does_not_depend_on_the_order_of_replicas():
    replicas = fleet(6, gpu=3, cpu=6)
    demand = zipf_demand(40)
    assert run(replicas, demand) == run(list(reversed(replicas)), demand)


def test_table_lists_gpu_holders_before_warm_ones():
    p = DesiredPlacement(
        {
            "r0": ReplicaPlacement(cpu=frozenset({"a"})),
            "r1": ReplicaPlacement(gpu=frozenset({"a"})),
            "r2": ReplicaPlacement(gpu=frozenset({"a", "b"})),
        }
    )
    assert p.table() == {"a": ("r1", "r2", "r0"), "b": ("r2",)}
    assert p.for_replica("gone") == ReplicaPlacement()


def test_ten_thousand_adapters_on_a_thousand_replicas_plan_in_well_under_a_second():
    import time

    demand = {f"a{i:05d}": AdapterDemand(10.0 / (i + 1), 1000.0 / (i + 1)) for i in range(10_000)}
    replicas = fleet(1000, gpu=8, cpu=32)
    started = time.perf_counter()
    first = run(replicas, demand, PlacementSettings())
    second = run(replicas, demand, PlacementSettings(), previous=first)
    assert time.perf_counter() - started < 5.0  # ~0.15 s on an idle core
    assert second == first
    assert sum(copies(first).values()) == 1000 * 7


def test_a_draining_replica_gets_nothing_and_its_adapters_re_home():
    replicas = fleet(3, gpu=2, cpu=4)
    demand = tokens(a=300, b=200, c=100)
    before = run(replicas, demand)
    leaving = sorted(before, key=lambda rid: -len(before[rid].gpu))[0]
    replicas = [ReplicaStats(s.replica_id, gpu_slots=2, cpu_slots=4, draining=s.replica_id == leaving) for s in replicas]
    after = run(replicas, demand, previous=before)
    assert after[leaving] == ReplicaPlacement()
    assert set(copies(after)) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("costs", "expected"),
    [
        pytest.param({}, {"light": 2, "heavy": 2}, id="equal token rates, equal costs: two copies each"),
        pytest.param({"heavy": 3.0}, {"light": 1, "heavy": 3}, id="rank-64-like adapter: 3x the step cost, 3 copies"),
    ],
)
def test_copies_follow_token_rate_times_step_cost(costs, expected):
    """Cost-aware packing: an adapter whose LoRA slows every step three times as
    much carries three times the load at the same token rate."""
    demand = tokens(light=100, heavy=100)
    p = plan(PlacementSnapshot(fleet(4, gpu=2), demand, costs), PLAIN)
    assert copies(p) == expected


def test_warm_tier_gives_first_copies_before_keeping_an_existing_second_one():
    """b has two warm copies from before; c has none. With room for only two warm
    copies, c's first copy wins over b's second: no duplicate where one will do."""
    two = PlacementSettings(reserve_gpu_slots=0, reserve_cpu_slots=0, warm_copies=2, confidence_z=0.0)
    replicas = [
        ReplicaStats("r0", gpu_slots=1, cpu_slots=2, gpu_resident=("a",), cpu_resident=("b",)),
        ReplicaStats("r1", gpu_slots=1, cpu_slots=2, gpu_resident=("a",), cpu_resident=("b",)),
    ]
    p = run(replicas, tokens(a=800, b=100, c=50), two)
    assert warm(p) == {"b": 1, "c": 1}


def test_a_rarely_used_adapter_stays_warm_through_the_long_memory():
    """Its 30 s rate is below the demand floor between requests; its long-memory
    rate is not, so it keeps a warm copy (a slow store would charge every request)."""
    settings = PlacementSettings(reserve_gpu_slots=0, reserve_cpu_slots=0, demand_floor=0.01)
    demand = {"hot": AdapterDemand(10, 1000), "rare": AdapterDemand(0.0001, 0.01, long_req_rate=0.02)}
    p = run(fleet(1, gpu=1, cpu=3), demand, settings)
    assert copies(p) == {"hot": 1} and warm(p) == {"rare": 1}
    forgotten = {"hot": AdapterDemand(10, 1000), "rare": AdapterDemand(0.0001, 0.01)}
    assert "rare" not in run(fleet(1, gpu=1, cpu=3), forgotten, settings).table()
