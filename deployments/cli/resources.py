"""Will the fleet fit on this Ray cluster? The arithmetic, as pure functions.

Why check at all: Ray Serve never refuses a deployment it cannot schedule. A replica
that fits nowhere stays PENDING_CREATION, Ray writes "taken more than 30s to be
scheduled" into its own log files every 30 s, and `lorafleet serve` waited silently
until its caller gave up (two engine replicas at 1 CPU each took both CPUs of a
2-CPU machine; the ingress could never start). So before deploying, `lorafleet serve`
packs every replica the config asks for onto the cluster's nodes and refuses to start
when one cannot be placed, naming the deployment, its ask and what there is.

Each replica is one Ray actor: it must fit on a single node (its CPUs and GPUs come
from one raylet), so the check packs per node (first-fit decreasing, the largest asks
first; exact enough for a handful of deployments) instead of comparing sums. "What the
cluster can ever provide" is the larger of its nodes now and, on an autoscaling
cluster (KubeRay), every node group at its `max_count`: a fleet that fits only after
the autoscaler adds nodes is pending, not impossible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EPS = 1e-6  # Ray's resource granularity is 1e-4: sums of 0.1s must not fail on float error
UNBOUNDED = -1  # a node group's max_count when the autoscaler has no limit


@dataclass(frozen=True)
class Ask:
    """One deployment's replicas and what each needs; `fields` names the config keys."""

    deployment: str
    replicas: int
    cpus: float
    gpus: float = 0.0
    fields: str = ""

    def per_replica(self) -> str:
        return _amount(self.cpus, self.gpus)


@dataclass(frozen=True)
class NodeGroup:
    """An autoscaler node type: each node's resources and how many there may ever be."""

    cpus: float
    gpus: float
    max_count: int  # UNBOUNDED (-1) for no limit


@dataclass(frozen=True)
class Capacity:
    """The cluster's nodes now (each a CPU and GPU total) and, when it autoscales, its node groups."""

    nodes: tuple[tuple[float, float], ...]
    groups: tuple[NodeGroup, ...] = ()

    @property
    def cpus(self) -> float:
        return sum(c for c, _ in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(g for _, g in self.nodes)


@dataclass(frozen=True)
class FitReport:
    """`unplaced`: deployment -> replicas that found no node (empty when everything fits)."""

    asks: tuple[Ask, ...]
    capacity: Capacity
    unplaced: dict[str, int] = field(default_factory=dict)
    needs_autoscaling: bool = False  # fits only once the autoscaler adds nodes

    @property
    def fits(self) -> bool:
        return not self.unplaced

    def message(self) -> str:
        """Why the fleet cannot be scheduled: each deployment's ask, the cluster, what to change."""
        total_cpus = sum(a.replicas * a.cpus for a in self.asks)
        total_gpus = sum(a.replicas * a.gpus for a in self.asks)
        lines = ["the fleet cannot be scheduled on this Ray cluster:"]
        for ask in self.asks:
            if ask.replicas:
                where = f" ({ask.fields})" if ask.fields else ""
                lines.append(f"  {ask.deployment} asks {ask.replicas} x {ask.per_replica()}{where}")
        lines.append(f"  in all {_amount(total_cpus, total_gpus)}; the cluster has {_amount(self.capacity.cpus, self.capacity.gpus)}"
                     f" on {_nodes(self.capacity.nodes)}")
        if self.capacity.groups:
            lines.append("  and its autoscaler can add at most: " + ", ".join(_group(g) for g in self.capacity.groups))
        for deployment, count in self.unplaced.items():
            ask = next(a for a in self.asks if a.deployment == deployment)
            lines.append(f"  {deployment}: {count} of {ask.replicas} replica(s) would never be scheduled")
        lines.append("  lower the per-replica CPUs/GPUs or the replica counts named above, or add nodes")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _amount(cpus: float, gpus: float) -> str:
    text = f"{_fmt(cpus)} CPU"
    return text + (f" + {_fmt(gpus)} GPU" if gpus else "")


def _nodes(nodes) -> str:
    if not nodes:
        return "no nodes"
    return f"{len(nodes)} node(s): " + ", ".join(_amount(c, g) for c, g in nodes)


def _group(group: NodeGroup) -> str:
    count = "any number of" if group.max_count == UNBOUNDED else f"{group.max_count} x"
    return f"{count} {_amount(group.cpus, group.gpus)} node(s)"


def fleet_asks(config) -> tuple[Ask, ...]:
    """What `deployments.app.build_graph` asks Ray for (the fleet controller asks 0 CPUs,
    Serve's own controller and proxies too): the engine replicas and the ingress."""
    d = config.deployment
    engines = tuple(
        Ask(config.engine_deployment_name(name), view.deployment.num_replicas, view.deployment.replica_cpus,
            view.deployment.replica_gpus, "deployment.num_replicas x deployment.replica_cpus/replica_gpus"
            + (f" (base {name})" if len(config.models) > 1 else ""))
        for name, view in config.bases().items()
    )
    return (*engines,
            Ask("Ingress", d.ingress_replicas, d.ingress_cpus, 0.0, "deployment.ingress_replicas x deployment.ingress_cpus"))


def _pack(asks: tuple[Ask, ...], nodes: list[list[float]]) -> dict[str, int]:
    """First-fit decreasing: the biggest replicas first, each onto the first node it fits."""
    unplaced: dict[str, int] = {}
    replicas = [(a.gpus, a.cpus, a.deployment) for a in asks for _ in range(a.replicas)]
    for gpus, cpus, deployment in sorted(replicas, reverse=True):
        for node in nodes:
            if node[0] + EPS >= cpus and node[1] + EPS >= gpus:
                node[0] -= cpus
                node[1] -= gpus
                break
        else:
            unplaced[deployment] = unplaced.get(deployment, 0) + 1
    return {a.deployment: unplaced[a.deployment] for a in asks if a.deployment in unplaced}


def _expanded(groups: tuple[NodeGroup, ...], replicas: int) -> list[list[float]]:
    """Every node the autoscaler may ever run (an unbounded group: one node per replica is enough)."""
    nodes = []
    for group in groups:
        count = replicas if group.max_count == UNBOUNDED else group.max_count
        nodes += [[group.cpus, group.gpus] for _ in range(count)]
    return nodes


def check_fit(asks: tuple[Ask, ...], capacity: Capacity) -> FitReport:
    """Pack the asks onto the nodes there are; failing that, onto the most nodes the
    autoscaler may run. Unplaced replicas are reported for the nodes there are now."""
    now = _pack(asks, [[c, g] for c, g in capacity.nodes])
    if not now:
        return FitReport(asks, capacity)
    if capacity.groups:
        replicas = sum(a.replicas for a in asks)
        if not _pack(asks, _expanded(capacity.groups, replicas)):
            return FitReport(asks, capacity, needs_autoscaling=True)
    return FitReport(asks, capacity, unplaced=now)


def shortfall(ask: Ask, free_cpus: float, free_gpus: float) -> str | None:
    """Why a replica of `ask` is waiting, if resources are the reason (for the pending
    message while the fleet starts); None when it would fit in what is free."""
    if free_cpus + EPS >= ask.cpus and free_gpus + EPS >= ask.gpus:
        return None
    return f"each asks {ask.per_replica()}, the cluster has {_amount(max(free_cpus, 0.0), max(free_gpus, 0.0))} free"
