"""What a trace allows at best, computed from the trace alone (no simulation).

bound -- the replica lower bound and the goodput upper bound of one trace:
    replica-seconds >= the measured requests' work at the cheapest step the cost
    model has (a full batch of max_num_seqs with no LoRA at all: prefill plus
    output tokens x step_s(max_num_seqs, 0) / max_num_seqs), because no schedule
    produces a token for less and a replica works at most one second per second;
    and >= min_replicas x the arrival window, because the fleet never has fewer.
    Goodput is at most every measured request within the SLO over the arrival
    window (no drain), attainment at most 100%.

per_adapter_deployments -- the world lorafleet replaces: every adapter its own
    deployment, at least one replica each, sized per minute to that adapter's own
    work at the same full-batch, LoRA-free cost (generous to it: a single-adapter
    deployment can merge its adapter into the weights, pays no start-up, and
    packs its minute's work perfectly). Computed analytically: simulating 10,000
    one-adapter deployments would take hours and could only come out worse than
    this; its SLO attainment is assumed 100%.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from cluster.sim.cost import CostModel
from cluster.sim.workload import Request


def trace_bounds(
    trace: Iterable[Request],
    cost: CostModel,
    *,
    warmup_s: float,
    adapters: int,
    min_replicas: int = 1,
    bucket_s: float = 60.0,
) -> dict[str, dict[str, object]]:
    """{"bound": ..., "per_adapter_deployments": ...}, each with slo_attainment,
    goodput_rps and replica_seconds_per_1k_requests (see the module docstring)."""
    token_s = cost.token_s_at_full_batch()
    prefill = cost.prefill_per_token_s
    work = 0.0
    measured = 0
    last = warmup_s
    per_bucket: dict[tuple[str | None, int], float] = {}
    for r in trace:
        if r.arrival_s < warmup_s:
            continue
        w = r.prompt_tokens * prefill + r.output_tokens * token_s
        work += w
        measured += 1
        last = r.arrival_s
        key = (r.adapter, int((r.arrival_s - warmup_s) // bucket_s))
        per_bucket[key] = per_bucket.get(key, 0.0) + w
    window = max(last - warmup_s, 1e-9)
    per_k = 1000.0 / measured if measured else 0.0
    lower = max(work, min_replicas * window)

    buckets = int(window // bucket_s) + 1
    widths = [min(bucket_s, window - b * bucket_s) for b in range(buckets)]
    deployments = adapters + (1 if any(a is None for a, _ in per_bucket) else 0)
    replica_s = deployments * window  # one replica each, always
    for (_, b), w in per_bucket.items():
        extra = max(1, math.ceil(w / widths[b] - 1e-9)) - 1 if widths[b] > 0 else 0
        replica_s += extra * widths[b]
    offered = measured / window
    return {
        "bound": {
            "method": "analytical: work at a full LoRA-free batch; every request within the SLO",
            "slo_attainment": 1.0,
            "goodput_rps": offered,
            "replica_seconds_per_1k_requests": lower * per_k,
            "mean_replicas": lower / window,
        },
        "per_adapter_deployments": {
            "method": "analytical: one deployment per adapter, min 1 replica, sized per minute at full batch",
            "slo_attainment": 1.0,
            "slo_attainment_assumed": True,
            "goodput_rps": offered,
            "replica_seconds_per_1k_requests": replica_s * per_k,
            "mean_replicas": replica_s / window,
            "deployments": deployments,
        },
    }
