"""lorafleet's alerts (issue 16, item 5): the chart's PrometheusRule, each rule run through
`promtool test rules` on synthetic series labelled as the PodMonitor, Ray and the DCGM
exporter label them. Every rule gets a case where it must fire and one where it must not,
and series of another release never make ours fire or keep them quiet.

Annotations are checked by `promtool check rules` (their templates parse) and stripped
before `promtool test rules`, which would otherwise compare their rendered text."""

from __future__ import annotations

import copy

import pytest

from tests.helm.promtool import RELEASE_LABEL, check_rules, dcgm, ray_pod, series, test_rules, up
from tests.helm.rendering import render_chart

MONITORED = {"monitoring": {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}
SERVE_AUTOSCALED = {**MONITORED, "autoscaling": {"engineReplicas": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}}}
OTHER_RELEASE = "llm/other"
TTFT_BUCKETS = ("0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "+Inf")


def _groups(values: dict = MONITORED) -> list[dict]:
    return render_chart(values).one("PrometheusRule")["spec"]["groups"]


def _without_annotations(groups: list[dict]) -> list[dict]:
    groups = copy.deepcopy(groups)
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return groups


def _labels(alert: str, severity: str, **extra: str) -> dict[str, str]:
    return {"lorafleet_release": RELEASE_LABEL, "severity": severity, **extra}


def _run(tmp_path, tests: list[dict], values: dict = MONITORED) -> None:
    result = test_rules(tmp_path, _without_annotations(_groups(values)), tests)
    assert result.returncode == 0, result.stdout + result.stderr


def _case(input_series: list[tuple[str, str]], alertname: str, eval_time: str, expected: list[dict]) -> dict:
    return {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in input_series],
            "alert_rule_test": [{"eval_time": eval_time, "alertname": alertname,
                                 "exp_alerts": [{"exp_labels": labels} for labels in expected]}]}


def _live(value: str, release: str = RELEASE_LABEL) -> tuple[str, str]:
    return series("ray_lorafleet_controller_live_replicas", ray_pod("fleet-head-abc", "head", "headgroup", release=release)), value


def test_the_rules_parse_with_their_annotation_templates(tmp_path):
    for values in (MONITORED, SERVE_AUTOSCALED):
        groups = _groups(values)
        result = check_rules(tmp_path, groups)
        assert result.returncode == 0, result.stdout + result.stderr
        names = [r["alert"] for g in groups for r in g["rules"]]
        assert names == ["LorafleetNoEngineReplicas", "LorafleetEngineReplicasDown", "LorafleetHighErrorRatio",
                         "LorafleetTimeToFirstTokenP99AboveSLO", "LorafleetAdapterLoadFailures",
                         "LorafleetUsageLedgerWriteFailures", "LorafleetGPUMemoryNearFull"]


def test_no_engine_replicas_fires_when_none_reports_or_the_metrics_are_gone(tmp_path):
    fired = [_labels("LorafleetNoEngineReplicas", "critical")]
    _run(tmp_path, [
        _case([_live("2 2 2 0x12")], "LorafleetNoEngineReplicas", "15m", fired),
        _case([_live("2x15")], "LorafleetNoEngineReplicas", "15m", []),
        # Only another release reports: ours has no series at all, which must alarm too.
        _case([_live("2x15", OTHER_RELEASE)], "LorafleetNoEngineReplicas", "10m", fired),
    ])


def test_engine_replicas_down_fires_below_num_replicas_for_five_minutes(tmp_path):
    fired = [_labels("LorafleetEngineReplicasDown", "warning")]
    _run(tmp_path, [
        _case([_live("2 2 1x12")], "LorafleetEngineReplicasDown", "12m", fired),
        _case([_live("2 2 1 1 2x12")], "LorafleetEngineReplicasDown", "12m", []),  # a short dip
        _case([_live("2x15"), _live("1x15", OTHER_RELEASE)], "LorafleetEngineReplicasDown", "12m", []),
    ])


def test_engine_replicas_down_follows_serves_autoscaling_target(tmp_path):
    target = series("ray_serve_autoscaling_target_replicas",
                    {**ray_pod("fleet-head-abc", "head", "headgroup"), "application": "lorafleet", "deployment": "EngineReplica"})
    ingress_target = target.replace('deployment="EngineReplica"', 'deployment="Ingress"')
    fired = [_labels("LorafleetEngineReplicasDown", "warning")]
    _run(tmp_path, [
        _case([_live("3x15"), (target, "3 3 4x12"), (ingress_target, "1x15")], "LorafleetEngineReplicasDown", "12m", fired),
        _case([_live("3 3 4x12"), (target, "3 3 4x12"), (ingress_target, "9x15")], "LorafleetEngineReplicasDown", "12m", []),
    ], values=SERVE_AUTOSCALED)


def _requests(status: str, per_minute: int, pod: str = "fleet-gpu-worker-a", release: str = RELEASE_LABEL) -> tuple[str, str]:
    labels = {**ray_pod(pod, release=release), "model": "llama", "adapter": "poet", "endpoint": "completions",
              "status": status}
    return series("ray_lorafleet_requests_total", labels), f"0+{per_minute}x30"


def test_error_ratio_fires_on_server_errors_and_not_on_client_errors(tmp_path):
    fired = [_labels("LorafleetHighErrorRatio", "critical")]
    _run(tmp_path, [
        # 1 in 11 requests is a 503: 9% > 5%.
        _case([_requests("200", 60), _requests("503", 6)], "LorafleetHighErrorRatio", "20m", fired),
        # 404s, 429s and 499s are the clients': no alert.
        _case([_requests("200", 60), _requests("404", 20), _requests("429", 20), _requests("499", 20)],
              "LorafleetHighErrorRatio", "20m", []),
        # 1 in 101 is a 500: 1% < 5%.
        _case([_requests("200", 100), _requests("500", 1)], "LorafleetHighErrorRatio", "20m", []),
        # Another release failing does not count against ours.
        _case([_requests("200", 60), _requests("500", 60, release=OTHER_RELEASE)], "LorafleetHighErrorRatio", "20m", []),
    ])


def _ttft(slow: bool) -> list[tuple[str, str]]:
    """Streams per minute, all with a first token under 0.5 s or all between 2.5 and 5 s."""
    out = []
    for le in TTFT_BUCKETS:
        within = float("inf") if le == "+Inf" else float(le)
        count = 10 if within >= (5.0 if slow else 0.5) else 0
        labels = {**ray_pod("fleet-gpu-worker-a"), "model": "llama", "adapter": "poet", "endpoint": "completions", "le": le}
        out.append((series("ray_lorafleet_time_to_first_token_seconds_bucket", labels), f"0+{count}x40"))
    return out


def test_ttft_p99_fires_only_above_the_slo_for_ten_minutes(tmp_path):
    fired = [_labels("LorafleetTimeToFirstTokenP99AboveSLO", "warning")]
    _run(tmp_path, [
        _case(_ttft(slow=True), "LorafleetTimeToFirstTokenP99AboveSLO", "20m", fired),
        _case(_ttft(slow=True), "LorafleetTimeToFirstTokenP99AboveSLO", "10m", []),  # not yet 10 minutes above
        _case(_ttft(slow=False), "LorafleetTimeToFirstTokenP99AboveSLO", "30m", []),
    ])


def _counter(name: str, values: str, pod: str = "fleet-gpu-worker-a", **labels: str) -> tuple[str, str]:
    return series(name, {**ray_pod(pod), **labels}), values


def test_adapter_load_failures_fire_on_any_failure_in_ten_minutes(tmp_path):
    name = "ray_lorafleet_adapter_load_failures_total"
    fired = [_labels("LorafleetAdapterLoadFailures", "warning")]
    _run(tmp_path, [
        _case([_counter(name, "0x10 1 2 3x10", replica="r1")], "LorafleetAdapterLoadFailures", "14m", fired),
        _case([_counter(name, "0x10 1 2 3x20", replica="r1")], "LorafleetAdapterLoadFailures", "30m", []),  # long over
        _case([_counter(name, "0x30", replica="r1")], "LorafleetAdapterLoadFailures", "20m", []),
    ])


def test_usage_ledger_write_failures_fire_at_once(tmp_path):
    name = "ray_lorafleet_ledger_write_failures_total"
    fired = [_labels("LorafleetUsageLedgerWriteFailures", "critical")]
    _run(tmp_path, [
        _case([_counter(name, "0x5 1 2 4x5")], "LorafleetUsageLedgerWriteFailures", "8m", fired),
        _case([_counter(name, "0x20")], "LorafleetUsageLedgerWriteFailures", "15m", []),
    ])


MIB = 1024 * 1024


def _dcgm_memory(pod: str, gpu: int, used_mib: int, total_mib: int, honor_labels: bool = False) -> list[tuple[str, str]]:
    labels = dcgm(pod, gpu, honor_labels)
    return [(series("DCGM_FI_DEV_FB_USED", labels), f"{used_mib}x30"),
            (series("DCGM_FI_DEV_FB_FREE", labels), f"{total_mib - used_mib}x30")]


def _nvml_memory(pod: str, used: float, total: float = 80e9) -> list[tuple[str, str]]:
    labels = {**ray_pod(pod), "replica": f"r-{pod}", "gpu": "0"}
    return [(series("ray_lorafleet_gpu_memory_used_bytes", labels), f"{used}x30"),
            (series("ray_lorafleet_gpu_memory_total_bytes", labels), f"{total}x30")]


def _up(*pods: str) -> list[tuple[str, str]]:
    return [(series("up", up(pod)), "1x30") for pod in pods]


def _dcgm_alert(pod: str, gpu: int, honor_labels: bool = False) -> dict[str, str]:
    labels = dcgm(pod, gpu, honor_labels)
    labels.update(namespace="llm", pod=pod)  # where the GPU's user is, whichever way DCGM was scraped
    return {**labels, **_labels("LorafleetGPUMemoryNearFull", "warning")}


def test_gpu_memory_near_full_reads_dcgm_for_the_release_pods_either_way_it_is_scraped(tmp_path):
    pods = ("fleet-gpu-worker-a", "fleet-gpu-worker-b", "fleet-gpu-worker-c")
    input_series = [*_up(*pods),
                    *_dcgm_memory("fleet-gpu-worker-a", 0, 79_000, 81_920),                     # 96.4%: below 97%
                    *_dcgm_memory("fleet-gpu-worker-a", 1, 80_500, 81_920),                     # 98.3%: fires
                    *_dcgm_memory("fleet-gpu-worker-b", 3, 81_000, 81_920, honor_labels=True),  # 98.9%: fires
                    *_dcgm_memory("someone-elses-pod", 2, 81_900, 81_920)]                      # not ours
    _run(tmp_path, [_case(input_series, "LorafleetGPUMemoryNearFull", "20m",
                          [_dcgm_alert("fleet-gpu-worker-a", 1), _dcgm_alert("fleet-gpu-worker-b", 3, honor_labels=True)])])


def test_gpu_memory_near_full_falls_back_to_nvml_only_where_dcgm_is_absent(tmp_path):
    input_series = [*_up("fleet-gpu-worker-a", "fleet-gpu-worker-b"),
                    *_nvml_memory("fleet-gpu-worker-a", 79.5e9),                          # no DCGM here: NVML fires
                    *_nvml_memory("fleet-gpu-worker-b", 79.5e9),                          # DCGM says fine: it wins
                    *_dcgm_memory("fleet-gpu-worker-b", 0, 60_000, 81_920)]
    nvml_alert = {**{k: v for k, v in ray_pod("fleet-gpu-worker-a").items()}, "replica": "r-fleet-gpu-worker-a", "gpu": "0",
                  **_labels("LorafleetGPUMemoryNearFull", "warning")}
    _run(tmp_path, [
        _case(input_series, "LorafleetGPUMemoryNearFull", "20m", [nvml_alert]),
        _case(input_series, "LorafleetGPUMemoryNearFull", "10m", []),  # 15 minutes not yet reached
    ])


def test_alert_thresholds_and_labels_follow_values(tmp_path):
    values = {"monitoring": {"podMonitor": {"enabled": True}, "prometheusRule": {
        "enabled": True, "errorRatio": 0.2, "ttftP99Seconds": 10, "alertLabels": {"team": "llm-platform"}}}}
    rules = {r["alert"]: r for g in _groups(values) for r in g["rules"]}
    assert rules["LorafleetHighErrorRatio"]["expr"].rstrip().endswith("> 0.2")
    assert rules["LorafleetTimeToFirstTokenP99AboveSLO"]["expr"].rstrip().endswith("> 10")
    assert all(r["labels"]["team"] == "llm-platform" for r in rules.values())
    fired = [_labels("LorafleetHighErrorRatio", "critical", team="llm-platform")]
    result = test_rules(tmp_path, _without_annotations(_groups(values)), [
        _case([_requests("200", 60), _requests("503", 6)], "LorafleetHighErrorRatio", "20m", []),     # 9% < 20%
        _case([_requests("200", 60), _requests("503", 30)], "LorafleetHighErrorRatio", "20m", fired),  # 33%
    ])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values, message", [
    ({"monitoring": {"prometheusRule": {"enabled": True}}}, "needs monitoring.podMonitor.enabled"),
    ({**MONITORED, "lorafleet": {"engine": {"gpu_memory_utilization": 0.98}}},
     "gpuMemoryRatio (0.97) must be above lorafleet.engine.gpu_memory_utilization (0.98)"),
])
def test_alerts_that_could_never_fire_or_always_fire_are_refused(values, message):
    import helm_python as helm

    with pytest.raises(helm.HelmError, ) as caught:
        render_chart(values)
    assert message in str(caught.value)


def test_the_pod_monitor_adds_the_release_label_the_rules_select_on():
    monitor = render_chart(MONITORED).one("PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (release,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "lorafleet_release"]
    assert release["sourceLabels"] == ["__meta_kubernetes_namespace", "__meta_kubernetes_pod_label_app_kubernetes_io_instance"]
    assert release["separator"] == "/"  # llm + fleet -> "llm/fleet", what the rules select
