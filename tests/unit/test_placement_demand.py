"""The demand estimator: EWMA rates from cumulative per-replica counters."""

from __future__ import annotations

import pytest

from cluster.placement import AdapterDemand, DemandEstimator
from cluster.stats import ReplicaStats


def report(rid: str, requests: dict[str, int], tokens: dict[str, int] | None = None) -> ReplicaStats:
    return ReplicaStats(rid, per_adapter_requests=requests, per_adapter_tokens=tokens or {})


def test_no_rates_before_two_observations_span_time():
    est = DemandEstimator(half_life_s=10)
    assert est.rates() == {}
    est.observe([report("r0", {"a": 5})], now=0.0)
    assert est.rates() == {}
    assert est.rate("a") == AdapterDemand(0.0, 0.0)


def test_steady_counters_give_the_true_rate_from_the_first_interval():
    """Decayed sums are unbiased at once: no ramp-up from zero as a plain EWMA has."""
    est = DemandEstimator(half_life_s=30)
    for step in range(5):
        t = step * 2.0
        est.observe([report("r0", {"a": 4 * step}, {"a": 100 * step})], now=t)
        if step >= 1:
            d = est.rate("a")
            assert d.req_rate == pytest.approx(2.0)
            assert d.token_rate == pytest.approx(50.0)


def test_counters_are_summed_over_replicas():
    est = DemandEstimator(half_life_s=30)
    est.observe([report("r0", {"a": 0}), report("r1", {"a": 10, "b": 0})], now=0.0)
    est.observe([report("r0", {"a": 5}), report("r1", {"a": 15, "b": 20})], now=5.0)
    rates = est.rates()
    assert rates["a"].req_rate == pytest.approx(2.0)  # (5 + 5) / 5 s
    assert rates["b"].req_rate == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("before", "after", "expected_increment"),
    [
        pytest.param({"a": 100}, {"a": 130}, 30, id="normal-growth"),
        pytest.param({"a": 100}, {"a": 7}, 7, id="reset-counter-went-down"),
        pytest.param({"a": 100}, {}, 0, id="adapter-vanished"),
        pytest.param({}, {"a": 9}, 9, id="new-adapter-on-known-replica"),
        pytest.param({"a": 100}, {"a": 100}, 0, id="no-change"),
    ],
)
def test_counter_increments_and_resets(before, after, expected_increment):
    est = DemandEstimator(half_life_s=1e9)  # no decay: the rate is increments / time
    est.observe([report("r0", before)], now=0.0)
    est.observe([report("r0", after)], now=10.0)
    assert est.rate("a").req_rate == pytest.approx(expected_increment / 10.0)


def test_counter_that_vanished_and_came_back_counts_from_zero():
    est = DemandEstimator(half_life_s=1e9)
    est.observe([report("r0", {"a": 50})], now=0.0)
    est.observe([report("r0", {})], now=1.0)
    est.observe([report("r0", {"a": 3})], now=2.0)
    assert est.rate("a").req_rate == pytest.approx(3 / 2.0)


def test_first_report_of_a_replica_only_sets_its_baseline():
    """A replica's lifetime counters are not one interval's worth of traffic."""
    est = DemandEstimator(half_life_s=1e9)
    est.observe([report("r0", {"a": 0})], now=0.0)
    est.observe([report("r0", {"a": 10}), report("late", {"a": 1_000_000})], now=10.0)
    assert est.rate("a").req_rate == pytest.approx(1.0)
    est.observe([report("r0", {"a": 10}), report("late", {"a": 1_000_010})], now=20.0)
    assert est.rate("a").req_rate == pytest.approx(20 / 20.0)


def test_forgotten_replica_sets_a_new_baseline_when_it_returns():
    est = DemandEstimator(half_life_s=1e9)
    est.observe([report("r0", {"a": 0})], now=0.0)
    est.forget("r0")
    est.observe([report("r0", {"a": 500})], now=10.0)
    assert est.rate("a").req_rate == 0.0


def test_old_demand_decays_with_the_half_life():
    est = DemandEstimator(half_life_s=10)
    est.add(0.0, {})
    est.add(10.0, {"a": 100})  # 10 req/s for 10 s
    before = est.rate("a").req_rate
    assert before == pytest.approx(10.0)
    est.add(20.0, {})  # then nothing for one half-life
    # S halves (50), T = 10 * 0.5 + 10 = 15  ->  50 / 15
    assert est.rate("a").req_rate == pytest.approx(50 / 15)
    for t in range(30, 400, 10):
        est.add(float(t), {})
    assert "a" not in est.rates()  # forgotten once negligible


@pytest.mark.parametrize(("seconds", "overtaken"), [(10, False), (20, True)])
def test_a_burst_at_three_times_the_rate_overtakes_after_log2_1_5_half_lives(seconds, overtaken):
    """With half-life 30 s, an adapter arriving at 3x another's steady rate has the
    higher estimate after 30 * log2(1.5) = 17.5 s: how fast the planner reacts."""
    est = DemandEstimator(half_life_s=30)
    est.add(0.0, {})
    for t in range(1, 301):
        est.add(float(t), {"a": 10})
    for t in range(301, 301 + seconds):
        est.add(float(t), {"a": 10, "burst": 30})
    rates = est.rates()
    assert (rates["burst"].req_rate > rates["a"].req_rate) is overtaken


def test_window_counts_the_requests_behind_an_estimate():
    est = DemandEstimator(half_life_s=1e9)
    est.add(0.0, {})
    est.add(20.0, {"a": 6})
    d = est.rate("a")
    assert d.window_s == pytest.approx(20.0)
    assert d.samples() == pytest.approx(6.0)
    assert AdapterDemand(1.0, 1.0).samples() is None  # exact


def test_time_going_backwards_is_an_error():
    est = DemandEstimator()
    est.add(5.0, {})
    with pytest.raises(ValueError, match="backwards"):
        est.add(4.0, {})


@pytest.mark.parametrize("half_life", [0.0, -1.0])
def test_half_life_must_be_positive(half_life):
    with pytest.raises(ValueError):
        DemandEstimator(half_life_s=half_life)


def test_base_model_requests_are_not_demand_for_an_adapter():
    """Replicas count base-model requests under "" (the test fleet found the planner
    placing "" on a replica); the base needs no placement, so it has no demand."""
    est = DemandEstimator(half_life_s=30)
    est.observe([report("r0", {"": 0, "a": 0}, {"": 0, "a": 0})], now=0.0)
    est.observe([report("r0", {"": 10, "a": 2}, {"": 500, "a": 100})], now=2.0)
    assert set(est.rates()) == {"a"}


def test_the_long_memory_keeps_a_rare_adapters_rate_between_its_requests():
    est = DemandEstimator(half_life_s=30, long_half_life_s=600)
    est.add(0.0, {})
    for t in range(60, 1201, 60):  # one request a minute
        est.add(float(t) - 1, {})
        est.add(float(t), {"rare": 1})
    est.add(1259.0, {})  # just before the next one
    d = est.rate("rare")
    assert d.req_rate < 0.01  # the 30 s window has all but forgotten it
    assert d.long_req_rate == pytest.approx(1 / 60, rel=0.25)
    assert est.rates()["rare"].long_req_rate == d.long_req_rate
    assert DemandEstimator(half_life_s=30).rate("x").long_req_rate == 0.0
