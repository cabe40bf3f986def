"""Billing one request (deployments.tenancy.billing): charged once, whichever way it
ended; an aborted request waits for the engine's count, and without one is billed what
the ingress saw. Clock injected: no sleeping."""

from __future__ import annotations

import asyncio

from deployments.engine.protocol import FinalUsage
from deployments.tenancy.billing import Bill, PendingBills
from deployments.tenancy.keys import Principal
from deployments.tenancy.ratelimit import KeyRateLimiter


class Ledger:
    def __init__(self):
        self.rows = []

    def record(self, key_id, tenant, adapter, prompt, completion):
        self.rows.append((key_id, tenant, adapter, prompt, completion))


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _bill(ledger, limiter=None, clock=None, tokens_per_minute=1000, reserve=500):
    limiter = limiter or KeyRateLimiter(clock=clock or Clock())
    principal = Principal("k1", "acme", "tenant", tokens_per_minute=tokens_per_minute)
    return Bill(limiter, ledger, principal, "poet", asyncio.run(limiter.reserve(principal, reserve))), limiter


def _budget(limiter):
    return limiter._tokens["k1"][1].level()


def test_a_completed_request_is_charged_its_usage_and_the_rest_of_the_reservation_comes_back():
    ledger, clock = Ledger(), Clock()
    bill, limiter = _bill(ledger, clock=clock)
    assert _budget(limiter) == 500
    bill.charge(FinalUsage(10, 40))
    bill.charge(FinalUsage(10, 40))  # once only
    bill.refund()
    assert ledger.rows == [("k1", "acme", "poet", 10, 40)]
    assert _budget(limiter) == 950


def test_a_request_that_produced_nothing_is_refunded_and_not_recorded():
    ledger = Ledger()
    bill, limiter = _bill(ledger)
    bill.refund()
    assert ledger.rows == [] and _budget(limiter) == 1000


def test_an_aborted_request_is_billed_the_engines_count_when_it_arrives():
    ledger, clock = Ledger(), Clock()
    bill, limiter = _bill(ledger, clock=clock)
    pending = PendingBills(timeout_s=30, clock=clock)
    pending.expect("r1", bill, seen=FinalUsage(10, 3))
    assert ledger.rows == [] and len(pending) == 1
    assert pending.settle("r1", FinalUsage(10, 7))
    assert ledger.rows == [("k1", "acme", "poet", 10, 7)]
    assert not pending.settle("r1", FinalUsage(10, 7))  # a duplicate report bills nothing
    assert len(ledger.rows) == 1 and _budget(limiter) == 1000 - 17


def test_a_report_below_what_the_client_received_is_billed_what_it_received():
    ledger, clock = Ledger(), Clock()
    bill, _ = _bill(ledger, clock=clock)
    pending = PendingBills(timeout_s=30, clock=clock)
    pending.expect("r1", bill, seen=FinalUsage(10, 9))
    pending.settle("r1", FinalUsage(0, 5))
    assert ledger.rows == [("k1", "acme", "poet", 10, 9)]


def test_without_a_report_the_bill_is_what_the_ingress_saw_after_the_timeout():
    ledger, clock = Ledger(), Clock()
    estimated = []
    bill, _ = _bill(ledger, clock=clock)
    pending = PendingBills(timeout_s=30, clock=clock, on_estimated=lambda: estimated.append(1))
    pending.expect("r1", bill, seen=FinalUsage(10, 3))
    clock.now = 29
    assert pending.expire() == 0 and ledger.rows == []
    clock.now = 31
    assert pending.expire() == 1
    assert ledger.rows == [("k1", "acme", "poet", 10, 3)] and estimated == [1] and pending.estimated == 1


def test_waiting_bills_are_bounded_and_flushed_at_shutdown():
    ledger, clock = Ledger(), Clock()
    pending = PendingBills(timeout_s=30, clock=clock, max_waiting=2)
    for i in range(3):
        bill, _ = _bill(ledger, clock=clock)
        pending.expect(f"r{i}", bill, seen=FinalUsage(1, i))
    assert len(pending) == 2 and ledger.rows == [("k1", "acme", "poet", 1, 0)]  # the oldest, billed what was seen
    pending.flush()
    assert len(ledger.rows) == 3 and len(pending) == 0


def test_a_report_that_arrives_before_its_bill_settles_it_when_it_is_expected():
    # The engine's cancellation, its report and the report's trip through the controller
    # can all happen before the ingress's own cancellation runs (seen in CI).
    ledger, clock = Ledger(), Clock()
    bill, _ = _bill(ledger, clock=clock)
    pending = PendingBills(timeout_s=30, clock=clock)
    assert not pending.settle("r1", FinalUsage(10, 7))
    assert ledger.rows == []
    clock.now = 29
    pending.expire()
    pending.expect("r1", bill, seen=FinalUsage(10, 9))  # never less than what the client received
    assert ledger.rows == [("k1", "acme", "poet", 10, 9)] and len(pending) == 0 and pending.estimated == 0


def test_an_early_report_nobody_claims_is_dropped_after_the_timeout_and_bounded():
    ledger, clock = Ledger(), Clock()
    pending = PendingBills(timeout_s=30, clock=clock, max_waiting=2)
    for i in range(3):
        pending.settle(f"r{i}", FinalUsage(1, i))
    assert list(pending._early) == ["r1", "r2"]  # the oldest dropped
    clock.now = 31
    pending.expire()
    bill, _ = _bill(ledger, clock=clock)
    pending.expect("r2", bill, seen=FinalUsage(1, 0))  # too late for the report: waits as usual
    assert ledger.rows == [] and len(pending) == 1
