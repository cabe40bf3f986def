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
