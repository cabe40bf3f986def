"""Simulation scenarios: a fleet, a workload, knobs and the policies to compare.

A scenario is YAML (bench/workloads/sim-*.yaml) with these sections, all optional
except `workload`; unknown keys are an error so a typo cannot silently fall back to
a default:

    name: sim-zipf-1.0                 # defaults to the file name
    description: free text
    fleet:
      replicas: 128
      cost_model: gpu_like             # or a cost-model JSON path, relative to the file
      cost: {gpu_slots: 8}             # overrides on top of the cost model
      max_ongoing_requests: 128        # Ray Serve's per-replica limit; null: none
      stats_period_s: 0.5              # replica stats -> router
      controller_tick_s: 1.0           # replica reports -> placement controller
    run:
      seed: 1                          # router randomness
      warmup_s: 30                     # excluded from the metrics
      ttft_slo_s: 1.0                  # goodput counts requests with TTFT <= this
    workload: {...}                    # cluster.sim.workload.WorkloadSpec fields
    rates: [300, 600]                  # optional sweep; request counts scale with rate
    routing: {...}                     # cluster.routing.RoutingSettings fields
    placement: {...}                   # cluster.placement.PlacementSettings fields
    policies: [pow2, multiplex, adapter_affinity+controller, oracle]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cluster.placement import PlacementSettings
from cluster.routing import POLICIES, RoutingSettings
from cluster.sim.cost import CostModel
from cluster.sim.simulator import CONTROLLER_SUFFIX, ORACLE, SimConfig
from cluster.sim.workload import WorkloadSpec, with_rate

DEFAULT_POLICIES = (
    "random",
    "pow2",
    "multiplex",
    "lora_affinity_llmd",
    "adapter_affinity",
    "adapter_affinity" + CONTROLLER_SUFFIX,
    ORACLE,
)
_SECTIONS = {"name", "description", "fleet", "run", "workload", "rates", "routing", "placement", "policies"}
_FLEET = {"replicas", "cost_model", "cost", "max_ongoing_requests", "stats_period_s", "controller_tick_s"}
_RUN = {"seed", "warmup_s", "ttft_slo_s"}


@dataclass(frozen=True)
class Scenario:
    name: str
    config: SimConfig
    workload: WorkloadSpec
    policies: tuple[str, ...] = DEFAULT_POLICIES
    rates: tuple[float, ...] = ()
    description: str = ""
    cost_source: str = "gpu_like"
    extra: dict[str, object] = field(default_factory=dict)

    def workloads(self) -> list[WorkloadSpec]:
        """The workload at each swept rate (the arrival window keeps its length),
        or just the workload."""
        if not self.rates:
            return [self.workload]
        return [with_rate(self.workload, r, keep_duration=True) for r in self.rates]


def check_policy(name: str) -> str:
    """Raise ValueError unless `name` is a routing policy, one with +controller, or
    the oracle."""
    base = name[: -len(CONTROLLER_SUFFIX)] if name.endswith(CONTROLLER_SUFFIX) else name
    if name != ORACLE and base not in POLICIES:
        known = sorted(POLICIES) + [p + CONTROLLER_SUFFIX for p in sorted(POLICIES)] + [ORACLE]
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(known)}")
    return name


def _only(section: str, data: Mapping[str, object], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) in {section}: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def scenario_from_dict(data: Mapping[str, object], *, base_dir: Path | None = None, name: str = "") -> Scenario:
    """Build a Scenario from parsed YAML. `base_dir` resolves a relative cost-model
    path."""
    _only("scenario", data, _SECTIONS)
    if "workload" not in data:
        raise ValueError("a scenario needs a workload section")
    fleet = dict(data.get("fleet") or {})
    run = dict(data.get("run") or {})
    _only("fleet", fleet, _FLEET)
    _only("run", run, _RUN)

    cost_source = str(fleet.pop("cost_model", "gpu_like"))
    if cost_source == "gpu_like":
        cost = CostModel.gpu_like()
    else:
        path = Path(cost_source)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        cost = CostModel.from_json(path)
    overrides = fleet.pop("cost", None) or {}
    if overrides:
        cost = CostModel.from_dict(overrides, base=cost)

    config = SimConfig(
        cost=cost,
        routing=RoutingSettings(**(data.get("routing") or {})),
        placement=PlacementSettings(**(data.get("placement") or {})),
        **fleet,
        **run,
    )
    policies = tuple(check_policy(str(p)) for p in (data.get("policies") or DEFAULT_POLICIES))
    rates = tuple(float(r) for r in (data.get("rates") or ()))
    return Scenario(
        name=str(data.get("name") or name),
        config=config,
        workload=WorkloadSpec.from_dict(data["workload"]),  # type: ignore[arg-type]
        policies=policies,
        rates=rates,
        description=str(data.get("description") or ""),
        cost_source=cost_source,
    )


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a scenario is a YAML mapping")
    return scenario_from_dict(data, base_dir=path.parent, name=path.stem)


def config_dict(config: SimConfig) -> dict[str, object]:
    """SimConfig as plain JSON-able data (pins as a plain mapping)."""
    data = dataclasses.asdict(config)
    data["placement"]["pins"] = dict(config.placement.pins)
    return data
