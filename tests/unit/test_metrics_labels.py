"""Bounded adapter label values (cluster/labels.py): at most top_k names at a time,
at most max_names ever, the rest `_other`; reviews follow the busiest adapters with
hysteresis."""

import pytest

from cluster.labels import BASE, OTHER, SPECIAL_LABELS, UNKNOWN, AdapterLabels
from adapters.validation import ADAPTER_NAME_PATTERN


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _labels(top_k=2, review_s=60.0, **kw):
    clock = Clock()
    return AdapterLabels(top_k, review_s, clock=clock, **kw), clock


def _send(labels, adapter, n):
    return [labels.label(adapter) for _ in range(n)]


def test_special_label_values_can_never_be_adapter_names():
    assert len(set(SPECIAL_LABELS)) == 3
    for value in SPECIAL_LABELS:
        assert not ADAPTER_NAME_PATTERN.fullmatch(value)


def test_base_model_requests_are_labelled_base():
    labels, _ = _labels()
    assert labels.label(None) == BASE
    assert labels.label("") == BASE
    assert labels.named == frozenset()


def test_first_top_k_adapters_are_named_and_the_rest_are_other():
    labels, _ = _labels(top_k=2)
    assert labels.label("a") == "a"
    assert labels.label("b") == "b"
    assert labels.label("c") == OTHER
    assert labels.label("a") == "a"
    assert labels.named == {"a", "b"}
    assert labels.peek("c") == OTHER and labels.peek("a") == "a" and labels.peek(None) == BASE


def test_top_k_zero_names_nothing():
    labels, clock = _labels(top_k=0)
    assert {labels.label(a) for a in ["a", "b", "c"]} == {OTHER}
    clock.now = 1000
    assert labels.label("a") == OTHER


def test_a_busier_adapter_replaces_the_least_requested_named_one_at_review():
    labels, clock = _labels(top_k=2, review_s=60)
    _send(labels, "a", 1)
    _send(labels, "b", 1)
    _send(labels, "a", 10)
    _send(labels, "b", 2)
    assert _send(labels, "hot", 10) == [OTHER] * 10
    clock.now = 61  # the next request triggers the review of the window that just ended
    assert labels.label("hot") == "hot"
    assert labels.named == {"a", "hot"}
    assert labels.label("b") == OTHER


def test_hysteresis_a_challenger_needs_twice_the_requests():
    labels, clock = _labels(top_k=1, review_s=60)
    _send(labels, "a", 10)
    _send(labels, "b", 19)  # busier, but not twice as busy
    clock.now = 61
    assert labels.label("a") == "a"
    assert labels.named == {"a"}


def test_an_idle_named_adapter_is_replaced_only_by_one_with_at_least_two_requests():
    labels, clock = _labels(top_k=1, review_s=60)
    labels.label("a")
    clock.now = 61
    labels.label("x")  # review of window 1 (a: 1); window 2 starts with x: 1
    clock.now = 122
    assert labels.label("y") == OTHER  # window 2: x had 1 request, a had 0 -> no swap
    assert labels.named == {"a"}
    _send(labels, "y", 1)
    clock.now = 183
    labels.label("z")  # window 3: y had 2 -> replaces idle a
    assert labels.named == {"y"}


def test_the_number_of_names_ever_used_is_capped_and_then_the_set_freezes():
    labels, clock = _labels(top_k=1, review_s=10, max_names=3)
    emitted = set()
    for i in range(10):  # a new hot adapter every window; the previous one cools down
        emitted.update(_send(labels, f"hot{i}", 20))
        if i:
            emitted.update(_send(labels, f"hot{i - 1}", 5))
        clock.now += 11
    assert emitted - {OTHER} == {"hot0", "hot1", "hot2"}
    assert labels.frozen
    assert labels.named == {"hot2"}


def test_default_cap_is_twice_top_k_and_label_values_stay_bounded_under_churn():
    labels, clock = _labels(top_k=3, review_s=10)
    values = set()
    for window in range(50):
        for i in range(6):
            values.update(_send(labels, f"w{window}-a{i}", 3 + i))
        clock.now += 11
    assert len(values - {OTHER}) <= 6
    assert OTHER in values


def test_reviews_are_deterministic_for_ties():
    def run():
        labels, clock = _labels(top_k=2, review_s=10)
        for a in ["a", "b"]:
            labels.label(a)
        _send(labels, "c", 4)
        _send(labels, "d", 4)
        clock.now = 11
        labels.label("e")
        return labels.named

    assert run() == run() == {"c", "d"}


@pytest.mark.parametrize("kwargs", [{"top_k": -1}, {"top_k": 1, "review_s": 0}, {"top_k": 3, "max_names": 2}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        AdapterLabels(**kwargs)


def test_unknown_is_a_distinct_label_for_requests_without_a_servable_model():
    assert UNKNOWN not in (BASE, OTHER)
