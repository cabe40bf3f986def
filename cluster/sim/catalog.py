"""The simulated adapters themselves: rank, target modules, step cost, store read time.

A scenario's `catalog` section describes classes of adapters, each a share of all
adapters:

    catalog:
      seed: 1
      classes:
        - {share: 0.5, rank: 8, modules: 2}                       # rank 8 on q/v
        - {share: 0.3, rank: 32, modules: 4}
        - {share: 0.2, rank: 128, modules: 7, store_load_s: [0.5, 2.0]}

Each adapter gets a class (seeded, independent of its popularity, which the workload
draws separately), a relative step cost `cluster.lora_cost.lora_cost(rank, modules)`
and a store read time: uniform in the class's `store_load_s` range, or the cost
model's `store_load_s` when the class gives none. No catalog: every adapter costs
1.0 and reads in the cost model's time, as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from random import Random

from cluster.lora_cost import lora_cost


@dataclass(frozen=True)
class AdapterClass:
    share: float
    rank: int = 8
    modules: int = 2
    store_load_s: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"an adapter class's share must be in (0, 1], got {self.share}")
        lora_cost(self.rank, self.modules)  # validates rank and modules
        if self.store_load_s is not None:
            low, high = self.store_load_s
            if not 0 <= low <= high:
                raise ValueError(f"store_load_s must be [low, high] with 0 <= low <= high, got {self.store_load_s}")
            object.__setattr__(self, "store_load_s", (float(low), float(high)))

    @property
    def cost(self) -> float:
        return lora_cost(self.rank, self.modules)


@dataclass(frozen=True)
class CatalogSpec:
    classes: tuple[AdapterClass, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        total = sum(c.share for c in self.classes)
        if self.classes and abs(total - 1.0) > 1e-6:
            raise ValueError(f"adapter class shares must add up to 1, got {total}")

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CatalogSpec:
        unknown = sorted(set(data) - {"classes", "seed"})
        if unknown:
            raise ValueError(f"unknown catalog keys: {', '.join(unknown)}")
        classes = []
        for item in data.get("classes") or ():  # type: ignore[union-attr]
            item = dict(item)  # type: ignore[arg-type]
            extra = sorted(set(item) - {"share", "rank", "modules", "store_load_s"})
            if extra:
                raise ValueError(f"unknown adapter class keys: {', '.join(extra)}")
            if item.get("store_load_s") is not None:
                item["store_load_s"] = tuple(item["store_load_s"])
            classes.append(AdapterClass(**item))
        return cls(tuple(classes), int(data.get("seed", 0)))  # type: ignore[arg-type]

    def build(self, names: Sequence[str]) -> Catalog:
        if not self.classes:
            return Catalog({}, {}, {})
        rng = Random(f"{self.seed}:catalog")
        weights = [c.share for c in self.classes]
        costs: dict[str, float] = {}
        load_s: dict[str, float] = {}
        kind: dict[str, AdapterClass] = {}
        for name in names:
            c = rng.choices(self.classes, weights)[0]
            kind[name] = c
            if c.cost != 1.0:
                costs[name] = c.cost
            if c.store_load_s is not None:
                load_s[name] = rng.uniform(*c.store_load_s)
        return Catalog(costs, load_s, kind)


@dataclass(frozen=True)
class Catalog:
    """adapter -> relative step cost (missing: 1.0), store read seconds (missing:
    the cost model's), and class."""

    costs: Mapping[str, float] = field(default_factory=dict)
    load_s: Mapping[str, float] = field(default_factory=dict)
    classes: Mapping[str, AdapterClass] = field(default_factory=dict)

    def cost(self, adapter: str | None) -> float:
        return 0.0 if adapter is None else self.costs.get(adapter, 1.0)
