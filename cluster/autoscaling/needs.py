"""How many replicas the demand needs, three ways, from the controller's demand model.

A replica can fall short in three ways, and the fleet must cover the worst:

compute -- decode and prefill work. At the target batch b (a share of max_num_seqs)
    a replica makes b tokens per step, and a step's time depends on how many
    adapters share it and what they cost (`ReplicaProfile.step_s`), so
    replicas = tokens/s x step / b + requests/s x prompt tokens x prefill time.
slots -- the working set: the adapters that need a LoRA slot at their request
    rates. Adapter a runs rho_a = tokens_a/s x step sequences at a time on
    average; spread over c_a = ceil(rho_a / b) replicas (no replica gives one
    adapter more than a batch), it holds a slot on each of them with probability
    1 - exp(-rho_a / c_a) (Poisson). The sum over adapters is the slots the
    working set occupies; at `slot_utilization` of gpu_slots per replica, that
    many replicas. This is what a queue-length autoscaler cannot see: a fleet can
    run out of slots (requests wait for another adapter to leave the batch) long
    before it runs out of compute.
host -- when reading an adapter from the store would break the SLO by itself
    (read time > read_slo_fraction x SLO), the adapters that carry all but
    `miss_budget` of the requests must already be warm in host memory, one copy
    each (plus their extra GPU copies), at `host_utilization` of cpu_slots.

The three interact through the step time (more adapters per batch, slower steps),
so the computation iterates a few times from one adapter per batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from cluster.autoscaling.settings import AutoscalingSettings, ReplicaProfile
from cluster.placement.demand import AdapterDemand

_ROUNDS = 4
_NO_DEMAND = AdapterDemand(0.0, 0.0)


@dataclass(frozen=True)
class Needs:
    """Replicas needed (fractional) for each reason, and what they rest on."""

    compute: float
    slots: float
    host: float
    working_set: float  # LoRA slots the working set occupies on average
    warm_set: int  # adapters that must stay warm in host memory (0: reads are fast)
    step_s: float  # the step time the sizing assumes
    request_s: float  # mean time a request spends decoding at that step

    @property
    def binding(self) -> float:
        return max(self.compute, self.slots, self.host)

    def reason(self) -> str:
        which = max(("compute", self.compute), ("slots", self.slots), ("host memory", self.host), key=lambda x: x[1])
        return which[0]


def compute_needs(
    demand: Mapping[str, AdapterDemand],
    profile: ReplicaProfile,
    settings: AutoscalingSettings,
    *,
    base: AdapterDemand = _NO_DEMAND,
    costs: Mapping[str, float] | None = None,
    read_s: Mapping[str, float] | None = None,
    prompt_tokens_per_request: float = 0.0,
) -> Needs:
    costs = costs or {}
    read_s = read_s or {}
    b = max(1.0, settings.target_batch_fraction * profile.max_num_seqs)
    lora_tokens = sum(d.token_rate for d in demand.values())
    tokens = lora_tokens + base.token_rate
    requests = sum(d.req_rate for d in demand.values()) + base.req_rate
    if tokens <= 0 and requests <= 0:
        return Needs(0.0, 0.0, 0.0, 0.0, 0, profile.step_s(b, 0, 0), 0.0)
    weighted = sum(d.token_rate * costs.get(a, 1.0) for a, d in demand.items())
    lora_share = lora_tokens / tokens if tokens > 0 else 0.0
    cost_per_lora_token = weighted / lora_tokens if lora_tokens > 0 else 0.0
    prefill = requests * prompt_tokens_per_request * profile.prefill_per_token_s

    adapters_per_batch, adapter_cost = (1.0 if lora_tokens > 0 else 0.0), cost_per_lora_token
    compute = slots = occupied = 0.0
    copies: dict[str, int] = {}
    busy_by: dict[str, float] = {}
    step = profile.step_s(b, 0, 0)
    for _ in range(_ROUNDS):
        step = profile.step_s(b, adapters_per_batch * adapter_cost, b * lora_share * cost_per_lora_token)
        compute = tokens * step / b + prefill
        occupied = cost_occupied = 0.0
        for a, d in demand.items():
            rho = d.token_rate * step
            if rho <= 0:
                continue
            c = max(1, math.ceil(rho / b - 1e-9))
            copies[a] = c
            busy = c * -math.expm1(-rho / c)
            busy_by[a] = busy
            occupied += busy
            cost_occupied += busy * costs.get(a, 1.0)
        slots = occupied / (profile.gpu_slots * settings.slot_utilization)
        replicas = max(compute, slots, 1e-9)
        adapters_per_batch = min(float(profile.gpu_slots), occupied / replicas)
        adapter_cost = cost_occupied / occupied if occupied > 0 else 0.0

    host, warm = _host_need(demand, requests, copies, busy_by, profile, settings, read_s)
    request_s = (tokens / requests) * step if requests > 0 else 0.0
    return Needs(compute, slots, host, occupied, warm, step, request_s)


def _host_need(
    demand: Mapping[str, AdapterDemand],
    requests: float,
    copies: Mapping[str, int],
    busy: Mapping[str, float],
    profile: ReplicaProfile,
    settings: AutoscalingSettings,
    read_s: Mapping[str, float],
) -> tuple[float, int]:
    """Replicas whose host memory keeps warm every adapter whose store read would
    break the SLO, except the coldest ones that together carry at most
    `miss_budget` of the requests. 0 when no read is that slow."""
    limit = settings.read_slo_fraction * settings.ttft_slo_s
    slow = [
        (max(d.req_rate, d.long_req_rate), a)
        for a, d in demand.items()
        if read_s.get(a, profile.store_load_s) > limit
    ]
    if not slow:
        return 0.0, 0
    slow.sort(reverse=True)
    remaining = sum(rate for rate, _ in slow)
    allowed = settings.miss_budget * max(requests, remaining)
    warm = 0
    host_slots = 0
    for rate, a in slow:
        if remaining <= allowed:
            break
        warm += 1
        host_slots += copies.get(a, 1)
        remaining -= rate
    # Adapters with fast reads sit in host memory too while they run (vLLM's
    # max_cpu_loras counts the GPU ones): count the slots they occupy on average.
    host_slots += sum(x for a, x in busy.items() if read_s.get(a, profile.store_load_s) <= limit)
    return host_slots / (profile.cpu_slots * settings.host_utilization), warm
