"""What a simulated run compares: routing, controller, autoscaler, as one name.

A policy name is a routing policy (`cluster.routing.POLICIES`) or an alias, followed
by `+`-separated parts:

    controller        the placement controller (cluster.placement.PlacementLoop)
    autoscale         lorafleet's autoscaler (cluster.autoscaling), with the
                      placement controller's demand model; implies controller
    ray_autoscale     Ray Serve's default autoscaler on ongoing requests, at the
                      scenario's target_ongoing_requests;
    ray_autoscale:T   ... at target T
    adapters_free     every request as if for the base model (the goodput bound)
    noplan            the controller estimates demand (for the autoscaler) but
                      never plans: no placement table, no preloads (an ablation)

Aliases, the names the issue's result files use:

    lorafleet              adapter_affinity+controller+autoscale
    ray_serve_llm_default  multiplex+ray_autoscale
    llmd_lora_affinity     lora_affinity_llmd+ray_autoscale
    bound                  adapter_affinity+adapters_free (same fleet, adapters free)

Without an autoscaler the fleet has a fixed size.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.routing import POLICIES

CONTROLLER = "controller"
AUTOSCALE = "autoscale"
RAY_AUTOSCALE = "ray_autoscale"
ADAPTERS_FREE = "adapters_free"
NOPLAN = "noplan"

ALIASES = {
    "lorafleet": "adapter_affinity+controller+autoscale",
    "ray_serve_llm_default": "multiplex+ray_autoscale",
    "llmd_lora_affinity": "lora_affinity_llmd+ray_autoscale",
    "bound": "adapter_affinity+adapters_free",
}


@dataclass(frozen=True)
class PolicySpec:
    name: str
    routing: str
    controller: bool = False
    autoscaler: str | None = None  # None, "lorafleet" or "ray"
    ray_target: float | None = None  # None: the scenario's
    adapters_free: bool = False
    plan: bool = True  # with the controller: does it plan (else demand estimates only)


def parse_policy(name: str) -> PolicySpec:
    """Raise ValueError for anything but a known routing policy or alias with known
    parts."""
    head, *parts = name.split("+")
    if head in ALIASES:
        head, *alias_parts = ALIASES[head].split("+")
        parts = alias_parts + parts
    if head not in POLICIES:
        known = sorted(POLICIES) + sorted(ALIASES)
        raise ValueError(f"unknown policy {name!r}: {head!r} is no routing policy or alias; known: {', '.join(known)}")
    controller = adapters_free = False
    plan = True
    autoscaler: str | None = None
    target: float | None = None
    for part in parts:
        if part == CONTROLLER:
            controller = True
        elif part == AUTOSCALE:
            controller, autoscaler = True, "lorafleet"
        elif part == RAY_AUTOSCALE or part.startswith(RAY_AUTOSCALE + ":"):
            autoscaler = "ray"
            if ":" in part:
                try:
                    target = float(part.split(":", 1)[1])
                except ValueError:
                    raise ValueError(f"policy {name!r}: ray_autoscale:T needs a number T") from None
                if target <= 0:
                    raise ValueError(f"policy {name!r}: target_ongoing_requests must be > 0")
        elif part == ADAPTERS_FREE:
            adapters_free = True
        elif part == NOPLAN:
            controller, plan = True, False
        else:
            raise ValueError(
                f"unknown policy part {part!r} in {name!r}; known: {CONTROLLER}, {AUTOSCALE}, "
                f"{RAY_AUTOSCALE}[:T], {ADAPTERS_FREE}, {NOPLAN}"
            )
    return PolicySpec(name, head, controller, autoscaler, target, adapters_free, plan)
