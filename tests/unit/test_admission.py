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
