"""The autoscaling decision (cluster.autoscaling): sizing, timing, draining, state."""

from __future__ import annotations

import json

import pytest

from cluster.autoscaling import (
    AutoscalerState,
    AutoscalingSettings,
    FleetSnapshot,
    ReplicaProfile,
    choose_drains,
    compute_needs,
    decide,
)
from cluster.placement import AdapterDemand
from cluster.stats import ReplicaStats

# Round numbers: a step is 20 ms + 0.1 ms per sequence + 1 ms per adapter; batch 50
# (100 x 0.5), so a full-enough step takes 25 ms plus the adapters in it.
PROFILE = ReplicaProfile(
    max_num_seqs=100, gpu_slots=4, cpu_slots=8, step_base_s=0.02, step_per_seq_s=0.0001,
    step_per_adapter_s=0.001, step_per_lora_seq_s=0.0, prefill_per_token_s=0.0, store_load_s=0.1,
)
SETTINGS = AutoscalingSettings(
    min_replicas=1, max_replicas=100, period_s=5, startup_s=50, target_batch_fraction=0.5,
    slot_utilization=1.0, downscale_delay_s=30, downscale_margin=0.0, max_downscale_fraction=0.5,
    demand_lag_s=0,
)


def demand(**token_rates: float) -> dict[str, AdapterDemand]:
    """100 tokens per request."""
    return {a: AdapterDemand(t / 100, t) for a, t in token_rates.items()}


def fleet(n: int, **kw) -> tuple[ReplicaStats, ...]:
    return tuple(ReplicaStats(f"r{i}", gpu_slots=4, cpu_slots=8, **kw) for i in range(n))


def snap(n: int, d, now: float = 0.0, **kw) -> FleetSnapshot:
    return FleetSnapshot(now=now, replicas=fleet(n), demand=d, **kw)


# ---- sizing --------------------------------------------------------------------------------


def test_compute_need_is_tokens_times_step_over_batch():
    """One adapter at 4,000 tok/s: a step at batch 50 is 20 + 5 ms plus 1 ms per
    adapter in it; ~2.1 replicas of compute, so the adapter runs ~105 sequences at
    once on 3 copies, 3 slots over 2.1 replicas: 1.42 adapters per batch."""
    needs = compute_needs(demand(a=4000), PROFILE, SETTINGS)
    assert needs.compute == pytest.approx(4000 * needs.step_s / 50)
    assert needs.working_set == pytest.approx(3.0, rel=1e-6)
    assert needs.step_s == pytest.approx(0.025 + 0.001 * 3 / needs.compute, rel=1e-3)


@pytest.mark.parametrize(
    ("adapters", "binding"),
    [
        pytest.param(1, "compute", id="one hot adapter: compute binds"),
        pytest.param(400, "slots", id="400 adapters at 10 tok/s each: the working set binds"),
    ],
)
def test_the_working_set_can_need_more_replicas_than_compute(adapters, binding):
    d = demand(**{f"a{i}": 4000 / adapters for i in range(adapters)})
    needs = compute_needs(d, PROFILE, SETTINGS)
    assert needs.reason() == binding
    if binding == "slots":
        # 400 adapters each running ~0.27 sequences: ~93 busy slots / 4 per replica
        assert needs.slots > 4 * needs.compute


def test_slow_reads_make_the_hot_adapters_stay_warm():
    d = demand(**{f"a{i}": 1000 / (i + 1) for i in range(200)})
    fast = compute_needs(d, PROFILE, SETTINGS)
    slow = compute_needs(d, PROFILE, SETTINGS, read_s={a: 2.0 for a in d})
    assert (fast.host, fast.warm_set) == (0.0, 0)
    assert slow.warm_set > 100 and slow.host > fast.binding
    assert slow.reason() == "host memory"


def test_costlier_adapters_need_more_compute():
    light = compute_needs(demand(a=4000), PROFILE, SETTINGS)
    cost = ReplicaProfile(**{**PROFILE.__dict__, "step_per_lora_seq_s": 0.0002})
    heavy = compute_needs(demand(a=4000), cost, SETTINGS, costs={"a": 3.8})
    assert heavy.compute > compute_needs(demand(a=4000), cost, SETTINGS).compute > light.compute


# ---- the decision --------------------------------------------------------------------------

HOT = demand(a=4000)  # 2.08 replicas of compute -> 3


@pytest.mark.parametrize(
    ("replicas", "starting", "queue", "expected", "words"),
    [
        pytest.param(1, 0, 0, 3, "scale up to 3: compute", id="too small: up to the need at once"),
        pytest.param(3, 0, 0, 3, "hold 3", id="right size: hold"),
        pytest.param(2, 1, 0, 3, "hold 3", id="a starting replica counts"),
        # 3 replicas start 3 x 50 seats / 2.64 s = 57 requests/s; half the SLO's worth
        # (28) may wait, the other 372 need ceil(372 / 50) = 8 more replicas
        pytest.param(3, 0, 400, 11, "the queue", id="a queue beyond the SLO adds a replica per batch"),
    ],
)
def test_decision_table(replicas, starting, queue, expected, words):
    decision, state = decide(snap(replicas, HOT, starting=starting, fleet_queue=queue), PROFILE, SETTINGS)
    assert decision.target == expected
    assert words in decision.reason
    assert state.target == expected


def test_the_queue_counts_replicas_already_starting():
    base = snap(3, HOT, fleet_queue=400)
    decision, _ = decide(base, PROFILE, SETTINGS)
    covered, _ = decide(snap(3, HOT, fleet_queue=400, starting=decision.target - 3), PROFILE, SETTINGS)
    assert covered.target == decision.target


def test_scale_down_waits_for_the_delay_then_drains_the_cheapest_replica():
    big = fleet(6)
    state = AutoscalerState()
    decisions = []
    for t in range(0, 35, 5):
        decision, state = decide(FleetSnapshot(now=float(t), replicas=big, demand=HOT), PROFILE, SETTINGS, state)
        decisions.append(decision)
    assert [d.target for d in decisions[:6]] == [6] * 6  # 0..25 s: too large, not yet for 30 s
    assert all(d.drain == () for d in decisions[:6])
    assert decisions[6].target == 3  # at 30 s: at most half (max_downscale_fraction 0.5)
    assert [c.replica_id for c in decisions[6].drain] == ["r5", "r4", "r3"]  # all equal: newest first
    assert "scale down to 3" in decisions[6].reason


def test_a_need_back_above_the_fleet_restarts_the_downscale_delay():
    waiting = AutoscalerState(target=6, decided_at=20.0, too_large_since=0.0, need=2.08)
    spike, after = decide(snap(6, demand(a=4000 * 3), now=25.0), PROFILE, SETTINGS, waiting)
    assert after.too_large_since is None and spike.target >= 7  # need 6.3, plus the jump's trend


def test_downscale_margin_keeps_a_fleet_on_the_edge():
    settings = AutoscalingSettings(**{**SETTINGS.__dict__, "downscale_margin": 0.5, "downscale_delay_s": 0})
    decision, _ = decide(snap(4, HOT), PROFILE, settings)
    assert decision.target == 4  # need 2.08 x 1.5 = 3.1 -> 4: stays


def test_a_rising_trend_asks_for_replicas_one_start_up_ahead():
    state = AutoscalerState()
    for t, rate in [(0, 2000), (5, 2200), (10, 2400), (15, 2600), (20, 2800)]:
        decision, state = decide(snap(20, demand(a=rate), now=float(t)), PROFILE, SETTINGS, state)
    assert state.trend > 0
    assert decision.forecast > decision.needs.binding  # type: ignore[union-attr]
    flat = AutoscalerState()
    for t in range(0, 25, 5):
        flat_decision, flat = decide(snap(20, demand(a=2800), now=float(t)), PROFILE, SETTINGS, flat)
    assert flat_decision.forecast == pytest.approx(flat_decision.needs.binding)  # type: ignore[union-attr]


def test_calls_within_a_period_return_the_last_decision():
    first, state = decide(snap(1, HOT, now=0.0), PROFILE, SETTINGS)
    again, same = decide(snap(1, demand(a=40_000), now=4.0), PROFILE, SETTINGS, state)
    assert again.target == first.target and same is state
    later, _ = decide(snap(1, demand(a=40_000), now=5.0), PROFILE, SETTINGS, state)
    assert later.target > first.target


def test_bounds_and_no_demand():
    settings = AutoscalingSettings(**{**SETTINGS.__dict__, "min_replicas": 2, "max_replicas": 4})
    assert decide(snap(1, demand(a=40_000)), PROFILE, settings)[0].target == 4
    assert decide(snap(3, {}), PROFILE, settings)[0].target == 3  # no estimate yet: keep
    assert "no demand" in decide(snap(3, {}), PROFILE, settings)[0].reason


def test_state_round_trips_through_a_json_dict():
    """Ray Serve keeps a custom policy's state in a plain dict between calls."""
    _, state = decide(snap(2, HOT, now=7.0), PROFILE, SETTINGS)
    assert AutoscalerState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert AutoscalerState.from_dict({"target": 3, "unknown_key": 1}).target == 3


# ---- which replica drains ------------------------------------------------------------------


def test_drain_the_replica_whose_adapters_are_held_elsewhere():
    replicas = [
        ReplicaStats("r0", gpu_resident=("hot",), cpu_resident=("x",)),
        ReplicaStats("r1", gpu_resident=("cold",), cpu_resident=("x",)),
        ReplicaStats("r2", gpu_resident=("hot", "x"), cpu_resident=("own",)),
    ]
    d = {"hot": AdapterDemand(10, 1000), "cold": AdapterDemand(0.01, 1), "x": AdapterDemand(1, 100),
         "own": AdapterDemand(0.1, 10)}
    (choice,) = choose_drains(replicas, 1, d, default_read_s=0.5)
    assert choice.replica_id == "r0"  # hot and x live on r2 too: nothing to re-home
    assert choice.exclusive == () and "0 adapters held only here" in choice.why
    two = choose_drains(replicas, 2, d, default_read_s=0.5)
    assert [c.replica_id for c in two] == ["r0", "r1"]  # then r1 (cold: 0.005 read-s/s), not r2 (hot, now alone)


def test_drain_prefers_fewer_requests_in_flight_then_the_platforms_order():
    replicas = [ReplicaStats("r0", running=5), ReplicaStats("r1", running=1), ReplicaStats("r2", running=1)]
    assert choose_drains(replicas, 1, {})[0].replica_id == "r2"  # tie: newest (highest id)
    assert choose_drains(replicas, 1, {}, removable=("r1", "r2"))[0].replica_id == "r1"
    assert [c.replica_id for c in choose_drains(replicas, 3, {}, removable=("r0",))] == ["r0"]


def test_draining_and_unhealthy_replicas_are_not_counted_or_chosen():
    replicas = (ReplicaStats("r0", draining=True, gpu_resident=("a",)), ReplicaStats("r1", gpu_resident=("a",)),
                ReplicaStats("r2", healthy=False))
    assert [c.replica_id for c in choose_drains(replicas, 3, demand(a=100), default_read_s=1.0)] == ["r1"]
    decision, _ = decide(FleetSnapshot(now=0.0, replicas=replicas, demand=HOT), PROFILE, SETTINGS)
    assert decision.target == 3  # one serving replica: scale up to the need


@pytest.mark.parametrize(
    "kw",
    [{"min_replicas": 5, "max_replicas": 4}, {"period_s": 0}, {"slot_utilization": 0}, {"miss_budget": 1.0}],
)
def test_settings_reject_nonsense(kw):
    with pytest.raises(ValueError):
        AutoscalingSettings(**kw)


def test_settings_from_dict_rejects_typos():
    with pytest.raises(ValueError, match="unknown autoscaling keys"):
        AutoscalingSettings.from_dict({"max_replica": 3})
