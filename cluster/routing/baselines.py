"""Baseline policies, so benchmarks and the simulator compare like with like.

They use the same view, in-flight tracker and load definition (`replica_load`) as
`adapter_affinity`, so a difference in results comes from the policy, not from
what it could see. Each returns only the replicas it considered, as Ray Serve's
own routers do: the caller retries (asks again) when all of them refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from random import Random

from cluster.routing.candidates import replica_load
from cluster.routing.filters import HealthyFilter
from cluster.routing.inflight import InflightTracker
from cluster.routing.pickers import MaxScorePicker
from cluster.routing.policy import ChainPolicy
from cluster.routing.sampling import AllRoutable
from cluster.routing.scorers import LlmdLoraAffinityScorer, LlmdQueueScorer
from cluster.routing.view import ClusterView
from cluster.stats import Tier


def _pow2(
    pool: Sequence[str],
    view: ClusterView,
    inflight: InflightTracker,
    rng: Random,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Sample two of `pool` (skipping `exclude`), lower load first, ties at random."""
    wanted = 2
    if len(pool) > wanted:
        pool = rng.sample(pool, min(len(pool), wanted + len(exclude)))
    pair = [rid for rid in pool if rid not in exclude][:wanted]
    keyed = [
        (replica_load(view.stats(rid), inflight.count(rid)), rng.random(), rid) for rid in pair
    ]
    keyed.sort()
    return [rid for _, _, rid in keyed]


class Pow2Policy:
    """Ray Serve's default router: power of two choices on load. Adapter-blind.

    Samples two routable replicas uniformly and ranks the less-loaded first. O(1)
    per decision. It balances load well and ignores where adapters are, so at many
    adapters nearly every request lands where its adapter is not resident: the
    adapter-load rate this project exists to avoid.
    """

    name = "pow2"

    def rank(
        self, adapter: str | None, view: ClusterView, inflight: InflightTracker, rng: Random,
        waited_s: float = 0.0,
    ) -> list[str]:
        return _pow2(view.routable_ids, view, inflight, rng)


class MultiplexPolicy:
    """Ray Serve's model-multiplexing affinity (what Ray Serve LLM uses for LoRA).

    Candidate pool, in Ray's order: replicas that have the model loaded (here: the
    adapter in a GPU slot or the CPU cache); if none, the replicas holding the fewest
    models; power of two choices on load within the pool. The ranking is the pow2
    pair from the first pool followed by a pow2 pair from the fewest-models pool
    (all replicas if that has no one else), which is what Ray falls back to when the
    holders refuse the request because they are at max_ongoing_requests. Base-model
    requests: pow2 over all replicas.

    Known weakness (ray-project/ray#65691): a hot adapter stays pinned to its
    holders however long their queues get, until they hit max_ongoing_requests; it
    never spreads to idle replicas ahead of that.
    """

    name = "multiplex"

    def rank(
        self, adapter: str | None, view: ClusterView, inflight: InflightTracker, rng: Random,
        waited_s: float = 0.0,
    ) -> list[str]:
        if not view.routable_ids:
            return []
        if not adapter:
            return _pow2(view.routable_ids, view, inflight, rng)
        holders = view.holders(adapter, (Tier.GPU, Tier.CPU))
        first = _pow2(holders, view, inflight, rng) if holders else []
        tail = _pow2(view.fewest_adapters_ids, view, inflight, rng, exclude=first)
        if not tail:
            tail = _pow2(view.routable_ids, view, inflight, rng, exclude=first)
        return first + tail


class RandomPolicy:
    """Uniformly random ranking of up to `sample_k` routable replicas.

    The floor any policy must beat; also shows what load-blindness costs.
    """

    name = "random"

    def __init__(self, sample_k: int = 16) -> None:
        self.sample_k = sample_k

    def rank(
        self, adapter: str | None, view: ClusterView, inflight: InflightTracker, rng: Random,
        waited_s: float = 0.0,
    ) -> list[str]:
        ids = view.routable_ids
        return rng.sample(ids, min(len(ids), self.sample_k))


def build_lora_affinity_llmd() -> ChainPolicy:
    """llm-d's LoRA-affinity scheduling, approximated for the simulator comparison.

    Every routable replica is scored (llm-d does not sample: O(R) per decision) by
    LlmdLoraAffinityScorer (weight 1) + LlmdQueueScorer (weight 1), highest total
    wins, ties at random. It sees only reported stats, not the router's in-flight
    count, as llm-d's endpoint picker sees only scraped metrics.
    """
    return ChainPolicy(
        "lora_affinity_llmd",
        sampler=AllRoutable(),
        filters=[HealthyFilter()],
        scorers=[(1.0, LlmdLoraAffinityScorer()), (1.0, LlmdQueueScorer())],
        picker=MaxScorePicker(),
    )
