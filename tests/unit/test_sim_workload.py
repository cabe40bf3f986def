"""Synthetic traces: reproducible, Zipf-shaped, Poisson-timed, drifting and bursting."""

from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest

from cluster.sim.workload import (
    Burst,
    Cycle,
    Drift,
    LengthDist,
    Request,
    WorkloadSpec,
    adapter_names,
    generate,
    sweep_rates,
    with_rate,
    zipf_weights,
)


def test_same_seed_same_trace_other_seed_other_trace():
    spec = WorkloadSpec(adapters=50, requests=500, seed=3)
    assert list(generate(spec)) == list(generate(spec))
    assert list(generate(spec)) != list(generate(WorkloadSpec(adapters=50, requests=500, seed=4)))


def test_requests_are_plain_tuples_in_arrival_order():
    trace = list(generate(WorkloadSpec(adapters=10, requests=200)))
    assert len(trace) == 200
    assert all(isinstance(r, Request) for r in trace)
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(trace, trace[1:], strict=False))


def test_arrival_rate_is_the_poisson_rate():
    spec = WorkloadSpec(adapters=10, rate=50.0, requests=20_000)
    trace = list(generate(spec))
    assert len(trace) / trace[-1].arrival_s == pytest.approx(50.0, rel=0.03)


@pytest.mark.parametrize("s", [0.5, 1.0, 1.5])
def test_adapter_popularity_follows_zipf(s):
    spec = WorkloadSpec(adapters=100, zipf_s=s, requests=40_000, seed=1)
    counts = Counter(r.adapter for r in generate(spec))
    observed = sorted(counts.values(), reverse=True)
    expected = zipf_weights(100, s)
    assert observed[0] / spec.requests == pytest.approx(expected[0], rel=0.08)
    assert observed[9] / spec.requests == pytest.approx(expected[9], rel=0.2)


def test_changing_the_rate_keeps_the_adapter_sequence():
    slow = WorkloadSpec(adapters=100, rate=10, requests=300, seed=2)
    fast = with_rate(slow, 40)
    assert [r.adapter for r in generate(slow)] == [r.adapter for r in generate(fast)]
    assert list(generate(fast))[-1].arrival_s < list(generate(slow))[-1].arrival_s


def test_with_rate_can_keep_the_arrival_window():
    spec = WorkloadSpec(rate=10, requests=1000)
    assert with_rate(spec, 30, keep_duration=True).requests == 3000
    assert with_rate(spec, 30).requests == 1000


def test_drift_reshuffles_which_adapter_is_hot():
    spec = WorkloadSpec(adapters=200, zipf_s=1.2, rate=100, requests=20_000, drift=Drift(every_s=100), seed=5)
    trace = list(generate(spec))
    first = Counter(r.adapter for r in trace if r.arrival_s < 100).most_common(1)[0][0]
    second = Counter(r.adapter for r in trace if 100 <= r.arrival_s < 200).most_common(1)[0][0]
    assert first != second
    steady = WorkloadSpec(adapters=200, zipf_s=1.2, rate=100, requests=20_000, seed=5)
    no_drift = Counter(r.adapter for r in generate(steady) if r.arrival_s >= 100)
    assert no_drift.most_common(1)[0][0] == first


def test_burst_gives_a_cold_adapter_its_share_from_the_burst_time():
    spec = WorkloadSpec(adapters=100, rate=100, requests=20_000, burst=Burst(at_s=100, share=0.3), seed=6)
    trace = list(generate(spec))
    before = [r for r in trace if r.arrival_s < 100]
    after = [r for r in trace if r.arrival_s >= 100]
    burst_adapter = Counter(r.adapter for r in after).most_common(1)[0][0]
    assert sum(r.adapter == burst_adapter for r in before) / len(before) < 0.01
    assert sum(r.adapter == burst_adapter for r in after) / len(after) == pytest.approx(0.3, abs=0.02)


def test_base_model_requests_have_no_adapter():
    trace = list(generate(WorkloadSpec(adapters=10, requests=5000, base_fraction=0.2)))
    assert sum(r.adapter is None for r in trace) / 5000 == pytest.approx(0.2, abs=0.02)


@pytest.mark.parametrize(
    "dist",
    [LengthDist("uniform", 10, 20), LengthDist("lognormal", 8, 4000, mean=200, sigma=0.8), LengthDist("fixed", 1, 1, mean=7)],
)
def test_lengths_stay_in_bounds_and_average_near_the_mean(dist):
    spec = WorkloadSpec(adapters=5, requests=20_000, output_tokens=dist)
    outputs = [r.output_tokens for r in generate(spec)]
    assert min(outputs) >= dist.low and max(outputs) <= max(dist.high, int(dist.mean))
    assert sum(outputs) / len(outputs) == pytest.approx(dist.expected(), rel=0.05)


def test_names_can_map_ranks_onto_real_adapters():
    names = [f"team-{i}" for i in range(5)]
    trace = list(islice(generate(WorkloadSpec(adapters=5, requests=100), names=names), 100))
    assert {r.adapter for r in trace} <= set(names)
    with pytest.raises(ValueError):
        list(generate(WorkloadSpec(adapters=5), names=names[:3]))


def test_from_dict_reads_nested_sections_and_rejects_typos():
    spec = WorkloadSpec.from_dict(
        {"adapters": 7, "prompt_tokens": {"kind": "fixed", "mean": 12}, "drift": {"every_s": 60}, "burst": {"at_s": 5}}
    )
    assert spec.prompt_tokens.sample(None) == 12  # type: ignore[arg-type]
    assert spec.drift == Drift(60) and spec.burst == Burst(5)
    with pytest.raises(ValueError, match="unknown workload keys"):
        WorkloadSpec.from_dict({"adapter": 7})


def test_sweep_rates_run_up_to_the_maximum():
    assert sweep_rates(100, points=5, low=0.2) == pytest.approx([20, 40, 60, 80, 100])
    assert sweep_rates(50, points=1) == [50]


def test_adapter_names_sort_in_index_order():
    names = adapter_names(12_000)
    assert names == sorted(names) and names[0] == "adapter-00000"


def test_cycle_swings_the_arrival_rate_from_trough_to_peak_and_back():
    spec = WorkloadSpec(adapters=10, rate=20.0, requests=50_000, cycle=Cycle(period_s=1000, peak=4.0), seed=8)
    trace = list(generate(spec))
    assert trace[-1].arrival_s == pytest.approx(spec.duration_s(), rel=0.03)  # one period: mean factor 2.5

    def rate(lo: float, hi: float) -> float:
        return sum(lo <= r.arrival_s < hi for r in trace) / (hi - lo)

    assert rate(0, 50) == pytest.approx(20.0 * Cycle(1000, 4).factor(25), rel=0.1)
    assert rate(475, 525) == pytest.approx(80.0, rel=0.1)  # the peak, rate x 4
    assert rate(950, 1000) == pytest.approx(20.0 * Cycle(1000, 4).factor(975), rel=0.1)


def test_cycle_keeps_the_adapter_sequence():
    flat = WorkloadSpec(adapters=100, rate=10, requests=500, seed=2)
    cycled = WorkloadSpec(adapters=100, rate=10, requests=500, seed=2, cycle=Cycle(period_s=100))
    assert [r.adapter for r in generate(flat)] == [r.adapter for r in generate(cycled)]
