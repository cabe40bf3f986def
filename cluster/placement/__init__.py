"""Adapter placement, pure Python (no Ray, no vLLM): where each adapter should live.

    DemandEstimator  (replica counters -> per-adapter EWMA request and token rates)
      -> plan(PlacementSnapshot, PlacementSettings, previous) -> DesiredPlacement
      -> diff(desired, observed stats) -> [Load | Unload]
    PlacementLoop ties them together in the order the live controller and the
    simulator both use (see loop.py).
"""

from cluster.placement.demand import AdapterDemand, DemandEstimator
from cluster.placement.loop import PlacementLoop
from cluster.placement.planner import (
    EMPTY,
    Action,
    DesiredPlacement,
    Load,
    PlacementSnapshot,
    ReplicaPlacement,
    Unload,
    diff,
    plan,
)
from cluster.placement.settings import FrozenPins, PlacementSettings

__all__ = [
    "EMPTY",
    "Action",
    "AdapterDemand",
    "DemandEstimator",
    "DesiredPlacement",
    "FrozenPins",
    "Load",
    "PlacementLoop",
    "PlacementSettings",
    "PlacementSnapshot",
    "ReplicaPlacement",
    "Unload",
    "diff",
    "plan",
]
