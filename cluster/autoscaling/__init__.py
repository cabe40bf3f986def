"""Adapter-aware autoscaling, pure Python (no Ray): how many replicas, and which to drain.

    FleetSnapshot (replica stats + the controller's demand model + costs)
      -> compute_needs: replicas for compute, LoRA slots, host memory   (needs.py)
      -> decide(snapshot, profile, settings, state) -> (ScaleDecision, state)
         forecast one start-up ahead, queue signal, scale up at once, down after a
         delay, drain the replica whose adapters re-home most cheaply (drain.py)

The simulator runs `decide` unchanged (cluster/sim/scalers.py); the live glue is a
Ray Serve custom autoscaling policy that builds the snapshot from its
AutoscalingContext and the controller (see decide.py's docstring).
"""

from cluster.autoscaling.decide import AutoscalerState, FleetSnapshot, ScaleDecision, decide
from cluster.autoscaling.drain import DrainChoice, choose_drains
from cluster.autoscaling.needs import Needs, compute_needs
from cluster.autoscaling.settings import AutoscalingSettings, ReplicaProfile

__all__ = [
    "AutoscalerState",
    "AutoscalingSettings",
    "DrainChoice",
    "FleetSnapshot",
    "Needs",
    "ReplicaProfile",
    "ScaleDecision",
    "choose_drains",
    "compute_needs",
    "decide",
]
