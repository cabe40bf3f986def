"""The S3 backend's cached listing never holds a lock across the network call, and
concurrent callers share one listing in flight (item 6 of issue 12).

Before: `_current` listed the bucket while holding `self._lock`, so one slow listing
blocked every thread of the process that touched the store, even one only dropping the
cache after a write, and N concurrent callers made N listings one after another.

The S3 client here is a stand-in whose listing waits until the test lets it go (the
real server is exercised in tests/integration/test_store_s3.py).
"""

from __future__ import annotations

import threading

import pytest

from adapters.store_s3 import S3Backend

HANG = 30  # seconds before a test calls a wait a deadlock


class _SlowClient:
    def __init__(self, keys: list[str]):
        self.keys = keys
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.listings = 0
        self.fail_next = False

    def get_paginator(self, operation):
        assert operation == "list_objects_v2"
        return self

    def paginate(self, **kwargs):
        self.listings += 1
        self.started.release()
        if not self.release.wait(HANG):
            raise AssertionError("listing never released")
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("S3 went away")
        yield {"Contents": [{"Key": k, "ETag": '"e"'} for k in self.keys]}


@pytest.fixture
def client():
    return _SlowClient(["adapters/custom/1/manifest.json", "adapters/custom/1/files/a"])


@pytest.fixture
def backend(client):
    return S3Backend("s3://bucket/adapters", client=client, refresh_s=60)


def _in_thread(fn):
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as err:  # noqa: BLE001
            result["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_a_listing_in_flight_blocks_nobody_who_does_not_need_it(backend, client):
    lister, _ = _in_thread(backend.names)
    assert client.started.acquire(timeout=HANG)
    # While S3 is slow: dropping the cache after a write, and describing the store, return at once.
    other, _ = _in_thread(lambda: (backend.refresh(), backend.describe()))
    other.join(HANG)
    assert not other.is_alive(), "refresh() waited for another thread's listing"
    client.release.set()
    lister.join(HANG)


def test_concurrent_callers_share_one_listing(backend, client):
    threads = [_in_thread(backend.names) for _ in range(6)]
    assert client.started.acquire(timeout=HANG)
    client.release.set()
    for thread, result in threads:
        thread.join(HANG)
        assert result["value"] == ["custom"]
    assert client.listings == 1
    assert backend.versions("custom") == {"1": '"e"'}  # cached: no new listing
    assert client.listings == 1


def test_a_refresh_during_a_listing_makes_the_next_caller_list_anew(backend, client):
    """A listing that started before our write may miss it: after refresh() a caller
    never joins it, nor is it installed as the cache."""
    early, _ = _in_thread(backend.names)
    assert client.started.acquire(timeout=HANG)
    backend.refresh()
    late, result = _in_thread(backend.names)
    assert client.started.acquire(timeout=HANG)  # a second listing, not the first one joined
    client.release.set()
    early.join(HANG)
    late.join(HANG)
    assert client.listings == 2 and result["value"] == ["custom"]


def test_a_failed_listing_fails_its_waiters_and_the_next_call_lists_again(backend, client):
    client.fail_next = True
    threads = [_in_thread(backend.names) for _ in range(3)]
    assert client.started.acquire(timeout=HANG)
    client.release.set()
    for thread, result in threads:
        thread.join(HANG)
        assert isinstance(result.get("error"), ConnectionError)
    assert backend.names() == ["custom"] and client.listings == 2
