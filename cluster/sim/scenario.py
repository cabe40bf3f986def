"""Simulation scenarios: a fleet, a workload, knobs and the policies to compare.

A scenario is YAML (bench/workloads/sim-*.yaml, autoscale-*.yaml) with these
sections, all optional except `workload`; unknown keys are an error so a typo cannot
silently fall back to a default:

    name: sim-zipf-1.0                 # defaults to the file name
    description: free text
    fleet:
      replicas: 128                    # the fleet, or its starting size when autoscaled
      cost_model: gpu_like             # or a cost-model JSON path, relative to the file
      cost: {gpu_slots: 8}             # overrides on top of the cost model
      max_ongoing_requests: 64         # Ray Serve's per-replica cap; default and rule:
                                       #   the cost model's max_num_seqs; any other
      max_ongoing_reason: "..."        #   value needs this reason
      stats_period_s: 0.5              # replica stats -> router
      controller_tick_s: 1.0           # replica reports -> placement controller
      startup_s: 50                    # a new replica serves this long after it is asked for
    run:
      seeds: [1, 2, 3]                 # each seed: its own trace and router randomness
      warmup_s: 30                     # excluded from the metrics
      ttft_slo_s: 1.0                  # goodput counts requests with TTFT <= this
      timeline_s: 10                   # record SLO attainment and replicas per bucket
    workload: {...}                    # cluster.sim.workload.WorkloadSpec fields
    catalog: {...}                     # cluster.sim.catalog.CatalogSpec (ranks, read times)
    rates: [300, 600]                  # optional sweep; request counts scale with rate
    routing: {...}                     # cluster.routing.RoutingSettings fields
    placement: {...}                   # cluster.placement.PlacementSettings fields
    autoscaling: {...}                 # cluster.autoscaling.AutoscalingSettings fields
    ray_autoscaling: {...}             # cluster.sim.ray_autoscaler.RayAutoscalingConfig
    ray_targets: [16, 32, 64]          # target_ongoing_requests swept for Ray's autoscaler
    policies: [multiplex, adapter_affinity+controller, bound]   # see policies.py
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cluster.autoscaling import AutoscalingSettings
from cluster.placement import PlacementSettings
from cluster.routing import RoutingSettings
from cluster.sim.catalog import Catalog, CatalogSpec
from cluster.sim.cost import CostModel
from cluster.sim.policies import parse_policy
from cluster.sim.ray_autoscaler import RayAutoscalingConfig
from cluster.sim.simulator import SimConfig
from cluster.sim.workload import WorkloadSpec, adapter_names, with_rate

DEFAULT_POLICIES = (
    "random",
    "pow2",
    "multiplex",
    "lora_affinity_llmd",
    "adapter_affinity",
    "adapter_affinity+controller",
    "bound",
)
_SECTIONS = {
    "name", "description", "fleet", "run", "workload", "catalog", "rates", "routing",
    "placement", "autoscaling", "ray_autoscaling", "ray_targets", "policies",
}
_FLEET = {
    "replicas", "cost_model", "cost", "max_ongoing_requests", "max_ongoing_reason",
    "stats_period_s", "controller_tick_s", "startup_s",
}
_RUN = {"seed", "seeds", "warmup_s", "ttft_slo_s", "timeline_s"}


@dataclass(frozen=True)
class Scenario:
    name: str
    config: SimConfig
    workload: WorkloadSpec
    policies: tuple[str, ...] = DEFAULT_POLICIES
    rates: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (1,)
    description: str = ""
    cost_source: str = "gpu_like"
    catalog: CatalogSpec = field(default_factory=CatalogSpec)
    ray_targets: tuple[float, ...] = ()
    max_ongoing_reason: str = ""

    def workloads(self) -> list[WorkloadSpec]:
        """The workload at each swept rate (the arrival window keeps its length),
        or just the workload."""
        if not self.rates:
            return [self.workload]
        return [with_rate(self.workload, r, keep_duration=True) for r in self.rates]

    def for_seed(self, seed: int) -> tuple[SimConfig, list[WorkloadSpec]]:
        """The fleet config and the workloads of one seed: the seed drives both the
        trace and the router's randomness."""
        config = dataclasses.replace(self.config, seed=seed)
        return config, [dataclasses.replace(w, seed=seed) for w in self.workloads()]

    def build_catalog(self) -> Catalog:
        return self.catalog.build(adapter_names(self.workload.adapters))

    def runs(self) -> Iterator[tuple[int, SimConfig, WorkloadSpec, str]]:
        """Every (seed, config, workload, policy), seeds outermost."""
        for seed in self.seeds:
            config, workloads = self.for_seed(seed)
            for workload in workloads:
                for policy in self.policies:
                    yield seed, config, workload, policy


def check_policy(name: str) -> str:
    """Raise ValueError unless `name` parses as a policy (see policies.py)."""
    parse_policy(name)
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

    reason = str(fleet.pop("max_ongoing_reason", "") or "")
    cap = fleet.get("max_ongoing_requests")
    if cap is not None and cap != cost.max_num_seqs and not reason:
        raise ValueError(
            f"fleet.max_ongoing_requests ({cap}) differs from the engine's max_num_seqs "
            f"({cost.max_num_seqs}): say why in fleet.max_ongoing_reason, or leave it out"
        )
    if "seed" in run and "seeds" in run:
        raise ValueError("run: give seeds (a list) or seed, not both")
    seeds = tuple(int(s) for s in (run.pop("seeds", None) or [run.pop("seed", 1)]))
    run.pop("seed", None)
    if not seeds:
        raise ValueError("run.seeds must not be empty")

    autoscaling = data.get("autoscaling")
    ray = data.get("ray_autoscaling")
    config = SimConfig(
        cost=cost,
        routing=RoutingSettings(**(data.get("routing") or {})),
        placement=PlacementSettings(**(data.get("placement") or {})),
        autoscaling=AutoscalingSettings.from_dict(autoscaling) if autoscaling is not None else None,  # type: ignore[arg-type]
        ray_autoscaling=RayAutoscalingConfig(**ray) if ray is not None else None,  # type: ignore[arg-type]
        seed=seeds[0],
        **fleet,
        **run,
    )
    policies = tuple(check_policy(str(p)) for p in (data.get("policies") or DEFAULT_POLICIES))
    for p in policies:
        spec = parse_policy(p)
        if spec.autoscaler == "lorafleet" and config.autoscaling is None:
            raise ValueError(f"policy {p!r} autoscales: the scenario needs an autoscaling section")
        if spec.autoscaler == "ray" and config.ray_autoscaling is None:
            raise ValueError(f"policy {p!r} uses Ray's autoscaler: the scenario needs a ray_autoscaling section")
    rates = tuple(float(r) for r in (data.get("rates") or ()))
    catalog = data.get("catalog")
    return Scenario(
        name=str(data.get("name") or name),
        config=config,
        workload=WorkloadSpec.from_dict(data["workload"]),  # type: ignore[arg-type]
        policies=policies,
        rates=rates,
        seeds=seeds,
        description=str(data.get("description") or ""),
        cost_source=cost_source,
        catalog=CatalogSpec.from_dict(catalog) if catalog else CatalogSpec(),  # type: ignore[arg-type]
        ray_targets=tuple(float(t) for t in (data.get("ray_targets") or ())),
        max_ongoing_reason=reason,
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
