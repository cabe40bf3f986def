"""Adapter-aware request routing, pure Python (no Ray, no vLLM).

A decision ranks replicas for one request:

    ClusterView (built once per stats snapshot: adapter -> holders index)
      -> sampler   (which replicas to consider: holders + random, O(sample_k))
      -> filters   (healthy; optional load cap; hot-adapter spreading)
      -> scorers   (each in [0, 1], clamped, x weight, summed)
      -> picker    (highest total first, random ties)
      -> [replica_id, ...] best first

The Ray Serve router (deployments/) converts RunningReplica objects to ReplicaStats,
builds a ClusterView when stats change, keeps one InflightTracker, and per request
calls `policy.rank(adapter, view, inflight, rng)`. The simulator calls the same.
"""

from cluster.routing.baselines import (
    MultiplexPolicy,
    Pow2Policy,
    RandomPolicy,
    build_lora_affinity_llmd,
)
from cluster.routing.candidates import Candidate, Residency, ScoredCandidate, replica_load
from cluster.routing.filters import Filter, HealthyFilter, LoadCapFilter, SlotWaitFilter, SpreadFilter
from cluster.routing.inflight import InflightTracker
from cluster.routing.pickers import MaxScorePicker, Picker
from cluster.routing.policy import ChainPolicy, RoutingPolicy, WeightedScorer
from cluster.routing.registry import DEFAULT_POLICY, POLICIES, build_adapter_affinity, make_policy
from cluster.routing.sampling import AffinitySampler, AllRoutable, Sampler
from cluster.routing.scorers import (
    KVCacheScorer,
    LlmdLoraAffinityScorer,
    LlmdQueueScorer,
    LoadScorer,
    HomeScorer,
    SlotScorer,
    PlacementScorer,
    ResidencyScorer,
    Scorer,
)
from cluster.routing.settings import RoutingSettings
from cluster.routing.view import ClusterView, is_routable

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "AffinitySampler",
    "AllRoutable",
    "Candidate",
    "ChainPolicy",
    "ClusterView",
    "Filter",
    "HealthyFilter",
    "InflightTracker",
    "KVCacheScorer",
    "LlmdLoraAffinityScorer",
    "LlmdQueueScorer",
    "LoadCapFilter",
    "LoadScorer",
    "MaxScorePicker",
    "MultiplexPolicy",
    "Picker",
    "HomeScorer",
    "SlotScorer",
    "SlotWaitFilter",
    "PlacementScorer",
    "Pow2Policy",
    "RandomPolicy",
    "Residency",
    "ResidencyScorer",
    "RoutingPolicy",
    "RoutingSettings",
    "Sampler",
    "ScoredCandidate",
    "Scorer",
    "SpreadFilter",
    "WeightedScorer",
    "build_adapter_affinity",
    "build_lora_affinity_llmd",
    "is_routable",
    "make_policy",
    "replica_load",
]
