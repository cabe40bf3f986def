"""lorafleet's metrics, checked against a real Prometheus scraping the real test fleet.

A Prometheus (Debian's `prometheus` package; installed here if missing and possible) runs
on 127.0.0.1 with configs/prometheus.yml, its target replaced by the fleet's metrics port
and its scrape interval by 1 s. The module sends known traffic to adapters created for it
(copies of demo adapters under fresh names, so their label values are its own), then
checks that the counters moved by exactly that traffic, that histograms observed it,
that the residency gauges agree with the replicas' own stats (GET /fleet/replicas), that
the endpoint passes `promtool check metrics`, and that every dashboard query parses and,
except GPU panels on a machine without a GPU, returns data.

Ray ships metric values to its node's agent every ~10 s, so every check polls (up to
`SETTLE_S`) until Prometheus shows the expected value.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import uuid

import httpx
import pytest
import yaml

from tests.conftest import REPO
from tests.integration.conftest import NUM_REPLICAS, _free_port
from tests.unit.test_metrics_dashboards import dashboards, substitute

SETTLE_S = 90  # Ray's export period (10 s) + a scrape, with room for a busy 2-core machine
EXPORT_PERIOD_S = 10  # Ray's metrics_report_interval_ms
STATS_SETTLE_S = 2.0  # > routing.stats_period_s and deployment.stats_report_period_s
ADAPTER_A_REQUESTS = 20
ADAPTER_B_STREAMS = 8  # half with stream_options.include_usage, half without
STREAM_TOKENS = 5
RAY_LABELS = ("Component", "NodeAddress", "SessionName", "Version", "WorkerId")
# The placement planner's metrics exist only while the controller plans (`placement.enabled`)
# and, for applied actions, once replicas report what they carried out: their panels are
# parsed but may return nothing here.
AWAITING_PLANNER = ("ray_lorafleet_controller_planning_duration", "ray_lorafleet_controller_placement_")


# ---- Prometheus --------------------------------------------------------------------------


def _ensure_prometheus_installed() -> None:
    """Debian's `prometheus` (promtool comes with it) is a declared test prerequisite:
    `make test` installs it (the Makefile's `prometheus` target). Missing, it is a
    failure that says how to get it, never a skip."""
    missing = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: run `make prometheus` (apt-get install prometheus) "
                    "or `make test`, which installs it")


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def query_range(self, expr: str, seconds: float) -> list[dict]:
        end = time.time()
        response = httpx.get(f"{self.url}/api/v1/query_range", timeout=30,
                             params={"query": expr, "start": end - seconds, "end": end, "step": "5s"})
        return response.json()["data"]["result"]

    def value(self, expr: str) -> float:
        """The sum of an instant vector's values; 0 when it is empty."""
        return sum(float(r["value"][1]) for r in self.query(expr))

    def wait_for(self, expr: str, predicate, what: str, timeout_s: float = SETTLE_S):
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: still {result} after {timeout_s:.0f} s ({expr})")
            time.sleep(1)

    def wait_for_value(self, expr: str, expected: float, what: str) -> None:
        self.wait_for(expr, lambda r: math.isclose(sum(float(x["value"][1]) for x in r), expected), what)


@pytest.fixture(scope="module")
def prometheus(fleet, tmp_path_factory):
    _ensure_prometheus_installed()
    work = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((REPO / "configs" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    (job,) = config["scrape_configs"]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{fleet.metrics_port}"]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start: {(work / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.5)
        prom = Prometheus(url)
        prom.wait_for('up{job="lorafleet"}', lambda r: r and r[0]["value"][1] == "1", "the fleet's metrics target")
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# ---- known traffic -----------------------------------------------------------------------


def _new_adapter(fleet, source: str) -> str:
    name = f"metrics-{source}-{uuid.uuid4().hex[:8]}"
    shutil.copytree(fleet.assets / "adapters" / source, fleet.assets / "adapters" / name)
    return name


def _stream_chat(fleet, adapter: str, include_usage: bool) -> dict | None:
    body = {"model": adapter, "messages": [{"role": "user", "content": "count the metrics"}],
            "max_tokens": STREAM_TOKENS, "ignore_eos": True, "temperature": 0, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    usage, chunks = None, 0
    with httpx.stream("POST", f"{fleet.api}/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[len("data: "):])
                assert "error" not in chunk, chunk
                usage = chunk.get("usage") or usage
                chunks += 1
    assert chunks >= 2
    return usage


def _complete(fleet, model: str, prompt: str, max_tokens: int) -> dict:
    response = httpx.post(f"{fleet.api}/completions", timeout=120,
                          json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    assert response.status_code == 200, response.text
    return response.json()["usage"]


def _unknown_model(fleet) -> None:
    response = httpx.post(f"{fleet.api}/completions", json={"model": "no-such-adapter", "prompt": "x"}, timeout=30)
    assert response.status_code == 404


def _requests(adapter: str, endpoint: str, status: str = "200") -> str:
    return f'sum(ray_lorafleet_requests_total{{adapter="{adapter}", endpoint="{endpoint}", status="{status}"}})'


def _watched(a: str, b: str) -> dict[str, str]:
    """The series whose values the tests compare before and after the measured traffic."""
    return {
        "requests_a": _requests(a, "completions"),
        "requests_b": _requests(b, "chat"),
        "unknown": 'sum(ray_lorafleet_requests_total{adapter="_unknown", status="404"})',
        "prompt_a": f'sum(ray_lorafleet_prompt_tokens_total{{adapter="{a}"}})',
        "generation_a": f'sum(ray_lorafleet_generation_tokens_total{{adapter="{a}"}})',
        "prompt_b": f'sum(ray_lorafleet_prompt_tokens_total{{adapter="{b}"}})',
        "generation_b": f'sum(ray_lorafleet_generation_tokens_total{{adapter="{b}"}})',
        "duration_a": f'sum(ray_lorafleet_request_duration_seconds_count{{adapter="{a}"}})',
        "duration_b": f'sum(ray_lorafleet_request_duration_seconds_count{{adapter="{b}"}})',
        "ttft_a": f'sum(ray_lorafleet_time_to_first_token_seconds_count{{adapter="{a}"}})',
        "ttft_b": f'sum(ray_lorafleet_time_to_first_token_seconds_count{{adapter="{b}"}})',
        "tpot": "sum(ray_lorafleet_time_per_output_token_seconds_count)",
        "decisions": "sum(ray_lorafleet_router_decisions_total)",
        "decision_durations": "sum(ray_lorafleet_router_decision_duration_seconds_count)",
        "adapter_loads": "sum(ray_lorafleet_adapter_load_duration_seconds_count)",
    }


@pytest.fixture(scope="module")
def traffic(fleet, prometheus):
    """Send the module's known traffic once and return what it must have counted.

    Phase 1 makes every series the checks and dashboards read exist in Prometheus (a
    counter Ray has never exported has no series, and `rate()` cannot see the increase
    of a series born with its first value): one request to every adapter, a stream, a
    second request to A once the router knows it is in a GPU slot, a 404. Once
    exported, the values are read as the baseline. Phase 2 is the measured
    traffic: 20 completions to adapter A, 8 streamed chats to B, 3 unknown models, and
    one request to each of 3 adapters never used before (so adapters are loaded)."""
    demo = [name for name in fleet.adapters() if not name.startswith("metrics-")]
    a, b = _new_adapter(fleet, "poet"), _new_adapter(fleet, "haiku")
    cold = [_new_adapter(fleet, source) for source in ("pirate", "translator", "sql-helper")]
    try:
        for name in demo:
            _complete(fleet, name, "warm up", 2)
        warm_a = [_complete(fleet, a, "warm up", 4)]
        assert _stream_chat(fleet, b, include_usage=True)["completion_tokens"] == STREAM_TOKENS
        time.sleep(STATS_SETTLE_S)  # the router now sees A in a GPU slot: a `gpu` decision next
        warm_a.append(_complete(fleet, a, "warm up", 4))
        _unknown_model(fleet)
        watched = _watched(a, b)
        prometheus.wait_for_value(watched["requests_a"], 2, "warm-up requests to A")
        prometheus.wait_for_value(watched["requests_b"], 1, "warm-up stream to B")
        prometheus.wait_for_value(watched["prompt_a"], sum(u["prompt_tokens"] for u in warm_a), "warm-up prompt tokens of A")
        time.sleep(EXPORT_PERIOD_S + 3)  # every process has exported what it recorded
        before = {key: prometheus.value(query) for key, query in watched.items()}

        usages = [_complete(fleet, a, f"metrics probe {i % 3}", 4) for i in range(ADAPTER_A_REQUESTS)]
        streamed = [_stream_chat(fleet, b, include_usage=i % 2 == 0) for i in range(ADAPTER_B_STREAMS)]
        reported = [u for u in streamed if u is not None]
        assert len(reported) == ADAPTER_B_STREAMS // 2 and all(u["completion_tokens"] == STREAM_TOKENS for u in reported)
        for _ in range(3):
            _unknown_model(fleet)
        usages += [_complete(fleet, name, "cold start", 2) for name in cold]
        yield {
            "a": a, "b": b, "watched": watched, "before": before,
            "delta": {
                "requests_a": ADAPTER_A_REQUESTS, "requests_b": ADAPTER_B_STREAMS, "unknown": 3,
                "prompt_a": sum(u["prompt_tokens"] for u in usages[:ADAPTER_A_REQUESTS]),
                "generation_a": sum(u["completion_tokens"] for u in usages[:ADAPTER_A_REQUESTS]),
                # The same messages every time; the streams without include_usage count too.
                "prompt_b": reported[0]["prompt_tokens"] * ADAPTER_B_STREAMS,
                "generation_b": STREAM_TOKENS * ADAPTER_B_STREAMS,
                "duration_a": ADAPTER_A_REQUESTS, "duration_b": ADAPTER_B_STREAMS, "ttft_a": 0, "ttft_b": ADAPTER_B_STREAMS,
                # vLLM times output tokens after the first: requests with more than one.
                "tpot": sum(u["completion_tokens"] > 1 for u in usages) + ADAPTER_B_STREAMS,
            },
            "routed": ADAPTER_A_REQUESTS + ADAPTER_B_STREAMS + len(cold),
            "cold": len(cold),
        }
    finally:
        for name in (a, b, *cold):
            shutil.rmtree(fleet.assets / "adapters" / name, ignore_errors=True)


def _expect(prometheus, traffic, *keys: str) -> None:
    for key in keys:
        expected = traffic["before"][key] + traffic["delta"][key]
        prometheus.wait_for_value(traffic["watched"][key], expected, f"{key} (baseline {traffic['before'][key]})")


# ---- counters and histograms ---------------------------------------------------------


def test_request_counters_moved_by_exactly_the_traffic_sent(prometheus, traffic):
    _expect(prometheus, traffic, "requests_a", "requests_b", "unknown")
    a = traffic["a"]
    assert prometheus.value(f'sum(ray_lorafleet_requests_total{{adapter="{a}", status!="200"}})') == 0
    assert prometheus.value(f'sum(ray_lorafleet_requests_total{{adapter="{a}", endpoint="chat"}})') == 0
    (series,) = prometheus.query(f'ray_lorafleet_requests_total{{adapter="{a}"}}')
    assert series["metric"]["model"] and series["metric"]["endpoint"] == "completions"


def test_token_counters_match_the_usage_the_clients_received(prometheus, traffic):
    # B's streams without include_usage count too: the replica reads vLLM's usage itself.
    _expect(prometheus, traffic, "prompt_a", "generation_a", "prompt_b", "generation_b")


def test_latency_histograms_observed_every_successful_request(prometheus, traffic):
    _expect(prometheus, traffic, "duration_a", "duration_b", "ttft_b", "ttft_a", "tpot")
    a, b = traffic["a"], traffic["b"]
    # (Ray rebuilds a histogram's _sum from bucket midpoints: only its sign is checked.)
    assert prometheus.value(f'sum(ray_lorafleet_time_to_first_token_seconds_sum{{adapter="{b}"}})') > 0
    assert prometheus.value(f'sum(ray_lorafleet_request_duration_seconds_sum{{adapter="{b}"}})') > 0
    inf_bucket = f'sum(ray_lorafleet_request_duration_seconds_bucket{{adapter="{a}", le="+Inf"}})'
    assert prometheus.value(inf_bucket) == traffic["before"]["duration_a"] + ADAPTER_A_REQUESTS


def test_router_decisions_counted_by_residency_tier_with_their_duration(prometheus, traffic):
    for key in ("decisions", "decision_durations"):
        minimum = traffic["before"][key] + traffic["routed"]  # a request rejected by a busy replica is decided again
        prometheus.wait_for(traffic["watched"][key], lambda r, m=minimum: r and float(r[0]["value"][1]) >= m, key)
    decisions = prometheus.query("ray_lorafleet_router_decisions_total")
    tiers = {r["metric"]["tier"] for r in decisions}
    assert "gpu" in tiers, tiers  # repeated requests found their adapter in a GPU slot
    assert tiers & {"free_slot", "needs_eviction"}, tiers  # the cold adapters were misses
    assert tiers <= {"gpu", "cpu", "loading", "free_slot", "needs_eviction", "unknown", "base", "none"}
    assert {r["metric"]["policy"] for r in decisions} == {"adapter_affinity"}
    minimum = traffic["before"]["adapter_loads"] + traffic["cold"]
    prometheus.wait_for(traffic["watched"]["adapter_loads"], lambda r: r and float(r[0]["value"][1]) >= minimum,
                        "adapter load times")


# ---- gauges against the replicas' own stats -------------------------------------------


def _fleet_replicas(fleet) -> dict[str, dict]:
    return {r["replica_id"]: r for r in httpx.get(f"{fleet.base_url}/fleet/replicas", timeout=30).json()["replicas"]}


def _gauges(prometheus, metric: str) -> dict[tuple[str, str], float]:
    return {(r["metric"]["replica"], r["metric"].get("tier", "")): float(r["value"][1]) for r in prometheus.query(metric)}


def test_residency_gauges_and_load_counters_match_the_replicas_own_stats(fleet, prometheus, traffic):
    deadline = time.monotonic() + SETTLE_S
    while True:
        replicas = _fleet_replicas(fleet)
        resident = _gauges(prometheus, "ray_lorafleet_replica_resident_adapters")
        slots = _gauges(prometheus, "ray_lorafleet_replica_adapter_slots")
        loads = _gauges(prometheus, 'sum by (replica, tier) (ray_lorafleet_adapter_loads_total{tier="cpu"})')
        expected_resident = {(rid, tier): len(r[key]) for rid, r in replicas.items()
                             for tier, key in (("gpu", "gpu_resident"), ("cpu", "cpu_resident"), ("loading", "loading"))}
        expected_slots = {(rid, tier): r[key] for rid, r in replicas.items()
                          for tier, key in (("gpu", "gpu_slots"), ("cpu", "cpu_slots"))}
        expected_loads = {(rid, "cpu"): r["adapter_loads"] for rid, r in replicas.items() if r["adapter_loads"]}
        if (len(replicas) == NUM_REPLICAS and resident == expected_resident and slots == expected_slots
                and loads == expected_loads):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"gauges never matched /fleet/replicas:\nresident {resident}\nwant     {expected_resident}\n"
                        f"slots {slots}\nwant  {expected_slots}\nloads {loads}\nwant  {expected_loads}")
        time.sleep(2)
    # The two fresh adapters were read from the store and timed.
    assert prometheus.value("sum(ray_lorafleet_adapter_load_duration_seconds_count)") >= 2
    assert prometheus.value('sum(ray_lorafleet_adapter_loads_total{tier="gpu"})') >= 2


def test_engine_and_controller_gauges_are_exported(fleet, prometheus, traffic):
    replicas = set(_fleet_replicas(fleet))
    for metric in ("ray_lorafleet_replica_running_requests", "ray_lorafleet_replica_queued_requests",
                   "ray_lorafleet_replica_kv_cache_usage_ratio"):
        prometheus.wait_for(metric, lambda r: {x["metric"]["replica"] for x in r} == replicas, metric)
    prometheus.wait_for_value("max(ray_lorafleet_controller_live_replicas)", NUM_REPLICAS, "live replicas")


def test_gpu_metrics_follow_the_hardware(prometheus, traffic):
    """No GPU (this machine, CI): no GPU series at all, rather than zeros that look like
    an idle GPU. With NVIDIA GPUs: the NVML gauges are there."""
    _expect(prometheus, traffic, "requests_a", "generation_a")  # the replicas have exported
    gpu_series = prometheus.query('{__name__=~"ray_lorafleet_gpu_.*"}')
    if shutil.which("nvidia-smi"):
        assert gpu_series
    else:
        assert gpu_series == []


# ---- exposition and dashboards ---------------------------------------------------------


def _lorafleet_families(text: str) -> str:
    """The lorafleet families of an exposition, without the labels Ray adds to every series."""
    ray_labels = re.compile(r'(?:%s)="(?:[^"\\]|\\.)*",?' % "|".join(RAY_LABELS + ("otel_scope_[a-z_]+",)))
    lines = [ray_labels.sub("", line).replace(",}", "}") for line in text.splitlines()
             if re.match(r"^(# (HELP|TYPE) )?ray_lorafleet_", line)]
    return "\n".join(lines) + "\n"


def test_promtool_check_metrics_passes_on_the_metrics_endpoint(fleet, prometheus, traffic):
    _expect(prometheus, traffic, "requests_a", "generation_a")
    text = httpx.get(fleet.metrics_url, timeout=30).text
    assert "ray_lorafleet_requests_total" in text and "ray_serve_" in text  # beside Ray Serve's own
    # The whole endpoint parses; its only lint findings about lorafleet's families are the
    # camelCase labels Ray itself adds to every series (NodeAddress, WorkerId, ...).
    whole = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert whole.returncode in (0, 3), whole.stderr  # 1 = parse error; 3 = lint findings only
    ours = [line for line in (whole.stdout + whole.stderr).splitlines() if "lorafleet" in line]
    assert all("label names should be written in 'snake_case'" in line for line in ours), ours
    # lorafleet's own families, as defined (without Ray's labels), are lint-clean.
    families = _lorafleet_families(text)
    assert families.count("# TYPE ") >= 15, families[:2000]
    strict = subprocess.run(["promtool", "check", "metrics"], input=families, capture_output=True, text=True)
    assert strict.returncode == 0, strict.stdout + strict.stderr


def test_every_dashboard_query_parses_and_returns_data(fleet, prometheus, traffic, tmp_path):
    # Everything the traffic touched has been exported (by every process) before the queries run.
    _expect(prometheus, traffic, "requests_a", "duration_b", "ttft_b", "generation_b", "tpot")
    # vLLM's own metrics come from each engine's per-step stats through Ray (another
    # exporter than lorafleet's): wait for its queue-time histogram too, sending a request
    # while waiting (a replica replaced by an earlier test records it only once its engine
    # steps). The dashboards read none of vLLM's gauges: Ray drops them while an engine idles.
    def vllm_exported(result) -> bool:
        if not result:
            httpx.post(f"{fleet.base_url}/v1/completions", timeout=60,
                       json={"model": traffic["a"], "prompt": "metrics", "max_tokens": 2})
        return bool(result)

    prometheus.wait_for("ray_vllm_request_queue_time_seconds_count", vllm_exported, "vLLM's histograms exported through Ray")
    time.sleep(EXPORT_PERIOD_S + 3)
    queries = [(file, panel["title"], substitute(target["expr"]))
               for file, board in dashboards().items() for panel in board["panels"] for target in panel["targets"]]
    rules = tmp_path / "dashboards.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": [
        {"record": f"lorafleet:dashboard_query_{i}", "expr": expr} for i, (_, _, expr) in enumerate(queries)]}]}))
    parsed = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr

    no_gpu = not shutil.which("nvidia-smi")
    empty = []
    for file, title, expr in queries:
        result = prometheus.query(expr)  # the server parses it too
        values = [float(r["value"][1]) for r in result]
        if no_gpu and "ray_lorafleet_gpu_" in expr:
            assert result == [], f"{file} / {title}: GPU data on a machine without a GPU: {result}"
            continue
        if "DCGM_FI_" in expr:  # NVIDIA's DCGM exporter does not run here (tests/helm evaluates these panels)
            assert result == [], f"{file} / {title}: DCGM data without a DCGM exporter: {result}"
            continue
        if any(name in expr for name in AWAITING_PLANNER):
            continue
        if not any(math.isfinite(v) for v in values):
            series = {name: [(r["metric"], r["values"][:3], r["values"][-2:]) for r in prometheus.query_range(name, 300)]
                      for name in set(re.findall(r"\bray_lorafleet_[a-z0-9_]+", expr))}
            empty.append(f"{file} / {title}: {expr} -> {result}\n    series over the last 5 min: {series}")
    assert empty == [], "panels without data:\n" + "\n".join(empty)


def test_dashboard_variables_find_the_release_replicas_and_adapters(fleet, prometheus, traffic):
    _expect(prometheus, traffic, "requests_a")
    releases = {r["metric"].get("lorafleet_release") for r in prometheus.query("ray_lorafleet_requests_total")}
    assert releases == {"local"}  # the label configs/prometheus.yml puts on the target
    replicas = {r["metric"]["replica"] for r in prometheus.query('ray_lorafleet_replica_running_requests{lorafleet_release=~".*"}')}
    assert replicas == set(_fleet_replicas(fleet))
    adapters = {r["metric"]["adapter"] for r in prometheus.query('ray_lorafleet_requests_total{lorafleet_release=~".*"}')}
    assert {traffic["a"], traffic["b"], "_unknown"} <= adapters
