"""The one status line `lorafleet serve` keeps at the bottom of the terminal.

Instead of a log line per request, a newcomer sees what the fleet is doing in one line,
redrawn in place: live replicas, requests and tokens per second, requests in flight,
errors. Pure: a `Sample` is what the fleet reported at one moment (counters since
start), `status_line(previous, current)` turns two samples into text; the command
gathers samples (deployments/cli/serve.py) and the console draws them.

Sources, both the fleet's own: requests, generated tokens, running and queued come
from the engine replicas' stats as the fleet controller holds them (`/fleet/replicas`,
fresh every `stats_report_period_s`); errors from lorafleet's request counter on Ray's
metrics endpoint (`lorafleet_requests_total` by HTTP status, which sees requests
refused at the ingress that never reach an engine; it lags by Ray's metrics report
period). A source that is not available leaves its field out, never a made-up zero.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    replicas: int
    requests: int  # requests the engines have started (all replicas, all adapters and the base)
    tokens: int  # tokens the engines have generated for finished requests
    running: int
    queued: int
    errors: int | None = None  # requests answered with status >= 400 (but 499: the client left); None: unknown


def sample_from_replicas(stats: list[dict], at: float, errors: int | None = None) -> Sample:
    """A sample from `/fleet/replicas`' payload (one dict per live replica, cluster.stats.ReplicaStats)."""
    return Sample(
        at=at,
        replicas=len(stats),
        requests=sum(sum(s.get("per_adapter_requests", {}).values()) for s in stats),
        tokens=sum(int(s.get("generated_tokens", 0)) for s in stats),
        running=sum(int(s.get("running", 0)) for s in stats),
        queued=sum(int(s.get("queue_len", 0)) for s in stats),
        errors=errors,
    )


def errors_from_metrics(text: str) -> int | None:
    """Requests answered with an error, from Ray's Prometheus text; None when the
    counter is not there yet (Ray exports a counter after its first increment)."""
    from prometheus_client.parser import text_string_to_metric_families

    total, seen = 0.0, False
    for family in text_string_to_metric_families(text):
        if family.name not in ("ray_lorafleet_requests", "ray_lorafleet_requests_total"):
            continue
        for s in family.samples:
            if not s.name.endswith("_total"):
                continue
            seen = True
            status = s.labels.get("status", "")
            if status.isdigit() and int(status) >= 400 and int(status) != 499:
                total += s.value
    return int(total) if seen else None


def _rate(delta: float, seconds: float) -> float:
    return max(delta, 0.0) / seconds if seconds > 0 else 0.0


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def status_line(previous: Sample | None, current: Sample, extra: str = "") -> str:
    """e.g. `2 replicas · 3.1 req/s · 42.0 tok/s · 1 running · 0 errors · 57 requests so far`.

    Rates are over the interval between the two samples; a replica that restarted
    resets its counters, so a negative delta counts as zero, never as a negative rate."""
    parts = [f"{current.replicas} replica{'s' if current.replicas != 1 else ''}"]
    if previous is not None:
        seconds = current.at - previous.at
        parts.append(f"{_num(_rate(current.requests - previous.requests, seconds))} req/s")
        parts.append(f"{_num(_rate(current.tokens - previous.tokens, seconds))} tok/s")
    parts.append(f"{current.running} running" + (f", {current.queued} queued" if current.queued else ""))
    if current.errors is not None:
        parts.append(f"{current.errors} error{'s' if current.errors != 1 else ''}")
    parts.append(f"{current.requests:,} requests so far")
    if extra:
        parts.append(extra)
    return " · ".join(parts)
