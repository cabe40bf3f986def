"""The ingress's admission cap: a bounded number of requests in flight, refusals counted,
and a place released exactly once whatever path ends the request."""

import pytest

from deployments.tenancy.admission import AdmissionGate, ingress_admission_limit


def test_refuses_past_the_limit_and_admits_again_once_a_place_is_released():
    gate = AdmissionGate(2)
    first, second = gate.try_enter(), gate.try_enter()
    assert first and second
    assert gate.try_enter() is None
    assert gate.refused == 1
    first.release()
    assert gate.try_enter() is not None
    assert gate.in_flight == 2


def test_release_is_idempotent_so_every_ending_path_may_call_it():
    gate = AdmissionGate(1)
    ticket = gate.try_enter()
    ticket.release()
    ticket.release()  # e.g. the stream's `finally` and its finalizer
    assert gate.in_flight == 0
    assert gate.try_enter() is not None


def test_default_limit_is_what_the_engines_can_run_and_queue():
    assert ingress_admission_limit(configured=0, num_replicas=3, max_ongoing_requests=8, max_queued_requests=16) == 40
    assert ingress_admission_limit(configured=5, num_replicas=3, max_ongoing_requests=8, max_queued_requests=16) == 5


def test_a_zero_limit_is_refused():
    with pytest.raises(ValueError):
        AdmissionGate(0)


# ---- latency-bounded admission -----------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _gate(clock, **over):
    from deployments.tenancy.admission import LatencyBoundedGate

    return LatencyBoundedGate(**{"hard_limit": 1000, "slots": 4, "max_wait_s": 2.0, "cold_queue": 2, "clock": clock, **over})


def test_requests_the_engines_can_start_at_once_are_always_admitted():
    gate = _gate(Clock())
    assert all(gate.try_enter() for _ in range(4))
    assert gate.in_flight == 4


def test_before_any_completion_the_queue_is_the_engines_own_allowance():
    gate = _gate(Clock())
    tickets = [gate.try_enter() for _ in range(6)]  # 4 slots + cold_queue 2
    assert all(tickets) and gate.try_enter() is None


def test_a_request_is_refused_when_its_expected_wait_passes_the_bound_and_told_when_to_retry():
    """Little's law: 4 slots busy, completions at 2 per second, so the k-th queued request
    waits about k / 2 s. With a 2.2 s bound the 4th queued one is admitted, the 5th not."""
    clock = Clock()
    gate = _gate(clock, rate_half_life_s=1000.0, max_wait_s=2.2)
    for _ in range(20):  # a steady 2 completions per second for 10 s
        gate.try_enter().release()
        clock.now += 0.5
    admitted = [gate.try_enter() for _ in range(8)]
    assert all(admitted)  # 4 running + 4 queued: the 4th waits 2 s
    assert gate.try_enter() is None
    assert gate.retry_after_s() == 1
    assert gate.refused == 1
    for ticket in admitted[:3]:
        ticket.release()
    assert gate.try_enter() is not None  # slots freed: admitted again


def test_the_gate_follows_the_engines_concurrency():
    clock = Clock()
    gate = _gate(clock, cold_queue=0)
    assert [gate.try_enter() is not None for _ in range(5)] == [True] * 4 + [False]
    gate.set_slots(8)  # autoscaling added replicas
    assert gate.try_enter() is not None


def test_the_hard_limit_holds_whatever_the_rate():
    clock = Clock()
    gate = _gate(clock, hard_limit=5, max_wait_s=1e9, rate_half_life_s=1000.0)
    for _ in range(10):
        gate.try_enter().release()
        clock.now += 0.01
    assert [gate.try_enter() is not None for _ in range(6)] == [True] * 5 + [False]


# ---- the latency limit: a free slot is not free latency -------------------------------

def _serve(gate, clock, *, arrivals_per_s: float, seconds: float, capacity_per_s: float = 4.0, alone_s: float = 1.0,
           dt: float = 0.02) -> tuple[list[tuple[float, float]], int]:
    """A fleet whose engines share their throughput (`capacity_per_s` requests/s) among
    what they run, as batched engines whose step grows with the batch do; one request
    alone takes `alone_s`. Deterministic arrivals. Returns (admitted at, time in fleet)
    per completion, and the refusals. Arrivals stop after `seconds`; what was admitted
    is served to the end."""
    active: list[list] = []  # [remaining work, ticket, admitted at]
    done: list[tuple[float, float]] = []
    refused, next_arrival, end = 0, clock.now, clock.now + seconds
    while clock.now < end or active:
        while next_arrival <= clock.now < end:
            ticket = gate.try_enter()
            if ticket is None:
                refused += 1
            else:
                active.append([1.0, ticket, clock.now])
            next_arrival += 1.0 / arrivals_per_s
        clock.now += dt
        if active:
            rate = min(1.0 / alone_s, capacity_per_s / len(active))
            for request in active:
                request[0] -= rate * dt
            for request in [r for r in active if r[0] <= 0]:
                active.remove(request)
                request[1].release()
                done.append((request[2], clock.now - request[2]))
    return done, refused


def _p99(values):
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))]


def test_under_overload_admitted_latency_stays_near_the_bound_while_the_fleet_stays_busy():
    """2.5x the fleet's capacity; 24 slots and a 40 hard limit, as a 3-replica CPU fleet
    ships. Slots alone admit ~40 (each then takes ~10 s: time in the fleet grows with
    what is in it); the latency limit holds admitted requests near 1 s + the 2 s bound,
    and still completes ~the fleet's capacity (a gate that refused everything would also
    bound latency)."""
    clock = Clock()
    gate = _gate(clock, hard_limit=40, slots=24, max_wait_s=2.0, cold_queue=16, floor=3, latency_bound_s=2.0)
    _serve(gate, clock, arrivals_per_s=1.0, seconds=30)  # a calm start: the unloaded time is learnt
    done, refused = _serve(gate, clock, arrivals_per_s=10.0, seconds=120)
    settled = [took for at, took in done if at >= 60 + 30]
    assert refused > 0.4 * 10.0 * 120
    assert sum(settled) / len(settled) <= 1.0 + 2.0 + 0.5  # the limit aims the smoothed time at the bound
    assert _p99(settled) <= 1.0 + 2.0 * 2.0, _p99(settled)  # and saws around it
    assert len([1 for at, took in done if at + took >= 60 + 30]) / 60.0 >= 0.9 * 4.0


def test_the_same_overload_with_only_the_slot_rule_would_take_several_times_the_bound():
    """The yardstick above discriminates, and the limit is off unless configured: without
    `latency_bound_s` the same fleet and load stretch admitted requests far past it."""
    clock = Clock()
    gate = _gate(clock, hard_limit=40, slots=24, max_wait_s=2.0, cold_queue=16)
    _serve(gate, clock, arrivals_per_s=1.0, seconds=30)
    done, _ = _serve(gate, clock, arrivals_per_s=10.0, seconds=120)
    assert _p99([took for at, took in done if at >= 90]) > 2 * (1.0 + 2.0)


def test_below_capacity_nothing_is_refused():
    clock = Clock()
    gate = _gate(clock, hard_limit=40, slots=24, max_wait_s=2.0, cold_queue=16, floor=3, latency_bound_s=2.0)
    done, refused = _serve(gate, clock, arrivals_per_s=3.0, seconds=180)
    assert refused == 0 and len(done) > 500


def test_the_limit_never_starves_the_engines_and_grows_back_once_latency_allows():
    """Every request suddenly 10x slower (longer answers): the limit falls, never below
    one request per engine replica; once requests are quick again and clients press on
    the limit (here 1.5x capacity: at 4/s and 1 s alone, ~12 in flight meet the bound),
    it climbs back."""
    clock = Clock()
    gate = _gate(clock, hard_limit=40, slots=24, max_wait_s=2.0, cold_queue=16, floor=3, latency_bound_s=2.0)
    _serve(gate, clock, arrivals_per_s=1.0, seconds=30)
    _serve(gate, clock, arrivals_per_s=10.0, seconds=60, alone_s=10.0, capacity_per_s=0.4)
    assert gate.latency.limit >= 3
    low = gate.latency.limit
    clock.now += 120  # the window forgets the slow requests
    _serve(gate, clock, arrivals_per_s=6.0, seconds=120)
    assert gate.latency.limit > low + 2
