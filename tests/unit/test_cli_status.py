"""The status line `lorafleet serve` redraws instead of a log line per request."""

from deployments.cli.status import Sample, errors_from_metrics, sample_from_replicas, status_line


def _replica(rid, requests, tokens, running=0, queued=0):
    return {"replica_id": rid, "per_adapter_requests": requests, "generated_tokens": tokens,
            "running": running, "queue_len": queued}


def test_rates_come_from_the_difference_between_two_samples():
    before = sample_from_replicas([_replica("a", {"": 2, "poet": 3}, 100), _replica("b", {"poet": 5}, 50)], at=10.0, errors=0)
    after = sample_from_replicas([_replica("a", {"": 4, "poet": 7}, 300, running=2), _replica("b", {"poet": 5}, 50, queued=1)],
                                 at=12.0, errors=1)
    line = status_line(before, after)
    assert line == "2 replicas · 3.0 req/s · 100 tok/s · 2 running, 1 queued · 1 error · 16 requests so far"


def test_the_first_sample_has_no_rates_and_an_unknown_error_count_is_left_out():
    line = status_line(None, Sample(at=0, replicas=1, requests=0, tokens=0, running=0, queued=0, errors=None))
    assert line == "1 replica · 0 running · 0 requests so far"


def test_a_replica_restart_resetting_its_counters_never_gives_a_negative_rate():
    before = Sample(at=0, replicas=2, requests=50, tokens=900, running=0, queued=0)
    after = Sample(at=1, replicas=2, requests=10, tokens=100, running=0, queued=0)
    assert "0.0 req/s · 0.0 tok/s" in status_line(before, after)


def test_demo_progress_is_appended():
    line = status_line(None, Sample(0, 2, 0, 0, 0, 0), extra="demo adapters 3/10 published")
    assert line.endswith("· demo adapters 3/10 published")


METRICS = """\
# HELP ray_lorafleet_requests_total API requests
# TYPE ray_lorafleet_requests_total counter
ray_lorafleet_requests_total{adapter="poet",endpoint="completions",model="m",status="200"} 40.0
ray_lorafleet_requests_total{adapter="_unknown",endpoint="completions",model="m",status="404"} 2.0
ray_lorafleet_requests_total{adapter="poet",endpoint="completions",model="m",status="503"} 3.0
ray_lorafleet_requests_total{adapter="poet",endpoint="chat",model="m",status="499"} 1.0
"""


def test_errors_count_every_4xx_and_5xx_answer_but_a_client_that_left():
    assert errors_from_metrics(METRICS) == 5


def test_no_request_counter_yet_means_the_error_count_is_unknown():
    assert errors_from_metrics("# HELP ray_other a\n# TYPE ray_other counter\nray_other 1.0\n") is None
