"""The placement controller's knobs, with defaults an operator can start from.

One flat frozen dataclass, like `RoutingSettings`, so the pydantic config model in
`deployments/` can mirror it field for field through each field's `description`
metadata, and YAML stays flat. Frozen because the planner is a pure function of
(snapshot, settings, previous plan): changing a knob means passing new settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class FrozenPins(dict[str, int]):
    """A read-only, hashable adapter -> count dict.

    Why: a frozen dataclass field may not default to a mutable value, and settings
    shared by the controller, the simulator and tests must not change under them.
    Why a dict subclass and not a Mapping: pydantic (the config schema mirrors these
    settings) serialises and documents it as the plain mapping it is.
    """

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("pins are read-only; build new PlacementSettings instead")

    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FrozenPins({dict(self)!r})"

    def __reduce__(self) -> tuple[type, tuple[dict[str, int]]]:
        return (FrozenPins, (dict(self),))  # copy and pickle without __setitem__

    @classmethod
    def __get_pydantic_core_schema__(cls, source: object, handler):  # noqa: ANN206
        """Lets pydantic validate and serialise it as dict[str, int] (used when the
        config schema renders this type's default); imported lazily so this pure
        module does not depend on pydantic."""
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(cls, handler(dict[str, int]))


@dataclass(frozen=True)
class PlacementSettings:
    """Knobs of the placement planner and the demand estimator.

    Timing:
      period_s         -- how often the controller plans. Default 5 s: placement
                          moves cost adapter loads, so a plan per stats report (1 s)
                          would chase noise; the router absorbs what happens in
                          between.
      report_timeout_s -- a replica whose last report is older than this is left
                          out of the plan, so its adapters are placed elsewhere.
                          Default 5 s: several missed ~1 s reports, not one.
      half_life_s      -- half-life of the demand EWMA. Default 30 s: long enough
                          that one burst second does not reshuffle the fleet, short
                          enough that a popularity shift is acted on within a
                          minute.
      warm_half_life_s -- a second, long memory of request rates, for which
                          adapters stay warm in host memory: one asked for every
                          few minutes has a 30 s rate of about zero between
                          requests, yet with a slow store (seconds per read) it
                          must not be dropped from the warm tier. Default 600 s;
                          null: no long memory (the warm tier follows half_life_s).

    Replication:
      max_replicas_per_adapter -- cap on GPU copies of one adapter (None: up to the
                          whole fleet). An adapter gets ceil(its share of the token
                          rate x healthy replicas) copies, so the cap only bites
                          for adapters hotter than cap / replicas of all traffic.
      demand_floor     -- requests/s below which an (unpinned) adapter is not
                          placed at all: it is served on demand wherever the router
                          sends it.
      reserve_gpu_slots -- GPU slots per replica left out of the plan for adapters
                          the plan does not place (the cold tail), so serving one
                          of those does not evict a planned adapter.
      reserve_cpu_slots -- host-only slots per replica left out of the plan, for
                          the same reason: an adapter the plan does not place is
                          read into host memory where it is served, and with every
                          host slot planned it would evict a planned warm copy.
      warm_copies      -- host-memory copies per adapter that gets no GPU copy,
                          while host slots last. Default 2: a cold adapter's
                          request still needs a free GPU slot where it lands, and
                          with two warm replicas the router can pick the less busy.

    Stability:
      hysteresis       -- factor (>= 1) by which a challenger's demand must exceed
                          an incumbent's to take its slot, and by which an
                          adapter's ideal copy count must differ from its current
                          count before the count changes. Default 1.5: demand
                          noise of tens of percent moves nothing.
      balance_tolerance -- a replica's expected load may deviate from the mean by
                          this fraction before copies move to even it out. Default
                          0.25; moves then go to replicas with free slots, so a
                          new empty replica gets a share in one pass.

      confidence_z     -- standard deviations of Poisson noise by which an
                          incumbent's demand estimate is raised and a challenger's
                          lowered when they compete for a slot (see planner
                          `_standing`). Default 1.0: in the long tail, where an
                          adapter is seen a handful of times per half-life, the
                          estimates are too noisy for the hysteresis factor alone.

    Pins:
      pins             -- adapter -> minimum number of replicas that must hold it
                          in GPU slots whatever its demand (an SLA, a demo). Pins
                          ignore the floor and the cap and are placed first.
    """

    period_s: float = field(default=5.0, metadata={"description": "How often the placement controller plans, in seconds."})
    report_timeout_s: float = field(default=5.0, metadata={"description": "A replica silent for longer than this is left out of the plan (its adapters re-placed), in seconds."})
    half_life_s: float = field(default=30.0, metadata={"description": "Half-life of the per-adapter demand EWMA, in seconds."})
    warm_half_life_s: float | None = field(default=600.0, metadata={"description": "Half-life of the long memory of request rates that decides which adapters stay warm in host memory, in seconds (null: none)."})
    max_replicas_per_adapter: int | None = field(default=None, metadata={"description": "Cap on GPU copies of one adapter (null: no cap)."})
    demand_floor: float = field(default=0.001, metadata={"description": "Requests/s below which an unpinned adapter is not placed (served on demand)."})
    reserve_gpu_slots: int = field(default=1, metadata={"description": "GPU slots per replica kept free of planned adapters, for the unplanned tail."})
    reserve_cpu_slots: int = field(default=2, metadata={"description": "Host-only slots per replica kept free of planned adapters, for the unplanned tail."})
    warm_copies: int = field(default=2, metadata={"description": "Host-memory copies per adapter without a GPU copy, while host slots last."})
    hysteresis: float = field(default=1.5, metadata={"description": "Factor a challenger's demand must exceed an incumbent's by to displace it (and a copy count must be off by to change)."})
    confidence_z: float = field(default=1.0, metadata={"description": "Noise margin, in standard deviations, given to incumbents and taken from challengers when they compete for a slot."})
    balance_tolerance: float = field(default=0.25, metadata={"description": "Fraction a replica's expected load may deviate from the mean before copies move."})
    pins: Mapping[str, int] = field(default=FrozenPins(), metadata={"description": "Adapter -> minimum number of replicas holding it in GPU slots."})

    def __post_init__(self) -> None:
        if self.period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {self.period_s}")
        if self.report_timeout_s <= 0:
            raise ValueError(f"report_timeout_s must be > 0, got {self.report_timeout_s}")
        if self.half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, got {self.half_life_s}")
        if self.warm_half_life_s is not None and self.warm_half_life_s <= 0:
            raise ValueError(f"warm_half_life_s must be > 0 or None, got {self.warm_half_life_s}")
        if self.max_replicas_per_adapter is not None and self.max_replicas_per_adapter < 1:
            raise ValueError(
                f"max_replicas_per_adapter must be >= 1 or None, got {self.max_replicas_per_adapter}"
            )
        if self.demand_floor < 0:
            raise ValueError(f"demand_floor must be >= 0, got {self.demand_floor}")
        if self.reserve_gpu_slots < 0:
            raise ValueError(f"reserve_gpu_slots must be >= 0, got {self.reserve_gpu_slots}")
        if self.reserve_cpu_slots < 0:
            raise ValueError(f"reserve_cpu_slots must be >= 0, got {self.reserve_cpu_slots}")
        if self.warm_copies < 0:
            raise ValueError(f"warm_copies must be >= 0, got {self.warm_copies}")
        if self.hysteresis < 1.0:
            raise ValueError(f"hysteresis must be >= 1, got {self.hysteresis}")
        if self.confidence_z < 0:
            raise ValueError(f"confidence_z must be >= 0, got {self.confidence_z}")
        if not 0.0 <= self.balance_tolerance < 1.0:
            raise ValueError(f"balance_tolerance must be in [0, 1), got {self.balance_tolerance}")
        pins = FrozenPins(self.pins)
        for adapter, count in pins.items():
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"pins[{adapter!r}] must be an integer >= 1, got {count!r}")
        object.__setattr__(self, "pins", pins)
