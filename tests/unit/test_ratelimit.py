"""Token buckets and per-key limits, on an injected clock (no sleeping)."""

import pytest

from deployments.errors import InvalidRequest, RateLimited
from deployments.tenancy.keys import Principal
from deployments.tenancy.ratelimit import KeyRateLimiter, TokenBucket, retry_after


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_bucket_starts_full_refills_at_rate_and_caps_at_capacity():
    clock = Clock()
    bucket = TokenBucket(rate=2.0, capacity=4.0, clock=clock)
    assert [bucket.try_take(1) for _ in range(4)] == [0, 0, 0, 0]
    assert bucket.try_take(1) == pytest.approx(0.5)  # 1 token at 2/s
    clock.now += 0.5
    assert bucket.try_take(1) == 0
    clock.now += 100
    assert bucket.level() == 4.0  # never above capacity


def test_a_refused_take_takes_nothing():
    clock = Clock()
    bucket = TokenBucket(rate=1.0, capacity=10.0, clock=clock)
    bucket.try_take(8)
    assert bucket.try_take(5) == pytest.approx(3.0)
    assert bucket.level() == pytest.approx(2.0)


def test_giving_back_and_charging_after_the_fact():
    clock = Clock()
    bucket = TokenBucket(rate=1.0, capacity=10.0, clock=clock)
    bucket.try_take(10)
    bucket.give(4)  # the request used less than reserved
    assert bucket.level() == pytest.approx(4.0)
    bucket.give(-9)  # ... or more: the debt is paid by waiting
    assert bucket.level() == pytest.approx(-5.0)
    assert bucket.try_take(1) == pytest.approx(6.0)


@pytest.mark.parametrize("wait, header", [(0.001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (59.2, 60)])
def test_retry_after_rounds_up_to_whole_seconds(wait, header):
    assert retry_after(wait) == header


async def test_requests_per_second_with_retry_after():
    clock = Clock()
    limiter = KeyRateLimiter(clock=clock)
    key = Principal("k", "acme", "tenant", requests_per_second=2)
    await limiter.admit(key)
    await limiter.admit(key)  # burst of max(1, rate) = 2
    with pytest.raises(RateLimited) as err:
        await limiter.admit(key)
    assert err.value.retry_after_s == 1 and err.value.kind == "requests"
    clock.now += 0.5
    await limiter.admit(key)


async def test_slow_rates_give_long_accurate_retry_after():
    clock = Clock()
    limiter = KeyRateLimiter(clock=clock)
    key = Principal("k", "acme", "tenant", requests_per_second=0.1)  # one every 10 s
    await limiter.admit(key)
    clock.now += 2.5
    with pytest.raises(RateLimited) as err:
        await limiter.admit(key)
    assert err.value.retry_after_s == 8  # 7.5 s left, rounded up
    clock.now += 7.5
    await limiter.admit(key)


async def test_keys_have_separate_buckets_and_unlimited_keys_pass():
    limiter = KeyRateLimiter(clock=Clock())
    a = Principal("a", "acme", "tenant", requests_per_second=1)
    b = Principal("b", "acme", "tenant", requests_per_second=1)
    await limiter.admit(a)
    await limiter.admit(b)
    with pytest.raises(RateLimited):
        await limiter.admit(a)
    free = Principal("f", "acme", "tenant")
    for _ in range(1000):
        await limiter.admit(free)
    assert await limiter.reserve(free, 10**9) is None


async def test_tokens_per_minute_reserve_and_settle():
    clock = Clock()
    limiter = KeyRateLimiter(clock=clock)
    key = Principal("k", "acme", "tenant", tokens_per_minute=600)  # 10 tokens/s
    first = await limiter.reserve(key, 500)
    with pytest.raises(RateLimited) as err:
        await limiter.reserve(key, 200)
    assert err.value.kind == "tokens" and err.value.retry_after_s == 10  # 100 missing at 10/s
    limiter.settle(first, 120)  # used 120 of 500: 380 back
    limiter.settle(first, 0)  # settling twice changes nothing
    second = await limiter.reserve(key, 200)
    assert second is not None
    with pytest.raises(RateLimited) as err:
        await limiter.reserve(key, 400)
    assert err.value.retry_after_s == 12  # level 280, 120 missing at 10/s


async def test_a_request_larger_than_a_minute_of_budget_is_a_400_not_a_429():
    limiter = KeyRateLimiter(clock=Clock())
    with pytest.raises(InvalidRequest, match="1000 tokens per minute") as err:
        await limiter.reserve(Principal("k", "acme", "tenant", tokens_per_minute=1000), 1001)
    assert err.value.param == "max_tokens"


async def test_limits_are_shared_across_ingress_replicas():
    clock = Clock()
    limiter = KeyRateLimiter(shares=2, clock=clock)
    key = Principal("k", "acme", "tenant", requests_per_second=4, tokens_per_minute=1200)
    await limiter.admit(key)
    await limiter.admit(key)
    with pytest.raises(RateLimited):
        await limiter.admit(key)  # this replica's half: 2/s
    with pytest.raises(InvalidRequest):
        await limiter.reserve(key, 601)


async def test_changed_limits_take_effect():
    clock = Clock()
    limiter = KeyRateLimiter(clock=clock)
    await limiter.admit(Principal("k", "acme", "tenant", requests_per_second=1))
    with pytest.raises(RateLimited):
        await limiter.admit(Principal("k", "acme", "tenant", requests_per_second=1))
    await limiter.admit(Principal("k", "acme", "tenant", requests_per_second=5))  # keys file raised it
