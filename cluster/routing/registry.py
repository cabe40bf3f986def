"""Policies by name, so configs, the CLI, benchmarks and the simulator pick one by string."""

from __future__ import annotations

from collections.abc import Callable

from cluster.routing.baselines import (
    MultiplexPolicy,
    Pow2Policy,
    RandomPolicy,
    build_lora_affinity_llmd,
)
from cluster.routing.filters import Filter, HealthyFilter, LoadCapFilter, SlotWaitFilter, SpreadFilter
from cluster.routing.pickers import MaxScorePicker
from cluster.routing.policy import ChainPolicy, RoutingPolicy
from cluster.routing.sampling import AffinitySampler
from cluster.routing.scorers import (
    HomeScorer,
    KVCacheScorer,
    LoadScorer,
    PlacementScorer,
    ResidencyScorer,
    SlotScorer,
)
from cluster.routing.settings import RoutingSettings

DEFAULT_POLICY = "adapter_affinity"


def build_adapter_affinity(settings: RoutingSettings) -> ChainPolicy:
    """lorafleet's policy: adapter residency + load + KV headroom + placement hint +
    stable home + free LoRA slots, with explicit hot-adapter spreading, over an
    O(sample_k) candidate sample.

    Chain: AffinitySampler(sample_k, holders_cap)
      -> HealthyFilter -> [LoadCapFilter if load_cap] -> [SlotWaitFilter if
         queue_when_slots_busy] -> SpreadFilter
      -> ResidencyScorer, LoadScorer, KVCacheScorer, PlacementScorer, HomeScorer,
         SlotScorer (weighted)
      -> MaxScorePicker.
    LoadCapFilter runs before SpreadFilter so the spread is measured among replicas
    that may actually take the request.
    """
    filters: list[Filter] = [HealthyFilter()]
    if settings.load_cap is not None:
        filters.append(LoadCapFilter(settings.load_cap))
    if settings.queue_when_slots_busy:
        filters.append(SlotWaitFilter())
    filters.append(SpreadFilter(settings.spread_threshold, settings.spread_ratio))
    return ChainPolicy(
        "adapter_affinity",
        sampler=AffinitySampler(settings.sample_k, settings.holders_cap),
        filters=filters,
        scorers=[
            (settings.weight_residency, ResidencyScorer(settings.tier_scores())),
            (settings.weight_load, LoadScorer(settings.load_scale)),
            (settings.weight_kv, KVCacheScorer(settings.kv_threshold)),
            (settings.weight_placement, PlacementScorer()),
            (settings.weight_home, HomeScorer()),
            (settings.weight_slots, SlotScorer()),
        ],
        picker=MaxScorePicker(),
        patience_s=settings.slot_wait_patience_s,
    )


POLICIES: dict[str, Callable[[RoutingSettings], RoutingPolicy]] = {
    "adapter_affinity": build_adapter_affinity,
    "pow2": lambda settings: Pow2Policy(),
    "multiplex": lambda settings: MultiplexPolicy(),
    "lora_affinity_llmd": lambda settings: build_lora_affinity_llmd(),
    "random": lambda settings: RandomPolicy(settings.sample_k),
}


def make_policy(
    name: str = DEFAULT_POLICY, settings: RoutingSettings | None = None
) -> RoutingPolicy:
    """Build the named policy. Baselines ignore the settings they have no use for.

    Raises ValueError for an unknown name, listing the known ones.
    """
    try:
        builder = POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown routing policy {name!r}; known: {', '.join(sorted(POLICIES))}"
        ) from None
    return builder(settings if settings is not None else RoutingSettings())
