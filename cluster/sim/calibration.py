"""The simulator as a digital twin of a live benchmark run: replay what the live load
generator sent, fit the one cost term an offline step measurement cannot see, state
the error.

Why replay the live protocol and not just its rate: the live runner
(bench/harness/loadgen.py, Poisson mode) sends a warm-up window, waits for it to
drain, then measures a second window that starts from an empty fleet (with warm
adapter caches), and counts throughput from the first measured request to the last
completion, drain included. Near and past capacity the queue a window builds depends
on its length and on how it starts, so a steady-state simulation at the same rate would
not be measuring the same thing. `protocol_trace` rebuilds the exact requests of both
phases (same generator, same seed, same adapter names) on one simulated clock, and
the simulator's warm-up cut (`SimConfig.warmup_s`) is placed where the measured window
starts, so both sides count the same requests over the same kind of span.

Why only one fitted term: the offline step fit (bench/engine_calibration.py) measures
the engine alone. What a served fleet adds on a CPU-only machine is host CPU on the
engine's own cores (`CostModel.host_per_token_s`); it can be derived from a CPU
split of a served replica, or fitted on one live load level (`fit_decreasing`); the
other levels are then predictions, and their error is the model's.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cluster.sim.catalog import Catalog
from cluster.sim.simulator import SimConfig, SimResult, simulate
from cluster.sim.workload import Request, WorkloadSpec, generate


@dataclass(frozen=True)
class LiveProtocol:
    """The live Poisson runner's two phases. `gap_s`: simulated idle time between the
    warm-up's last arrival and the measured window's first, long enough for the
    warm-up to drain (live, the runner waits for every warm-up answer, then 2.5 s)."""

    warmup_s: float
    duration_s: float
    gap_s: float = 10.0

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.duration_s <= 0 or self.gap_s < 0:
            raise ValueError("need warmup_s >= 0, duration_s > 0 and gap_s >= 0")

    @property
    def measured_start_s(self) -> float:
        """Where the measured window starts on the simulated clock."""
        return self.warmup_s + self.gap_s if self.warmup_s > 0 else 0.0


def _phase(trace, window_s: float) -> list[Request]:
    """One phase of loadgen.run_load: arrivals re-based on the phase's first request,
    until one falls beyond the window (that one is consumed and not sent)."""
    out: list[Request] = []
    first = None
    for r in trace:
        first = r.arrival_s if first is None else first
        offset = r.arrival_s - first
        if offset >= window_s:
            break
        out.append(r._replace(arrival_s=offset))
    return out


def protocol_trace(
    workload: WorkloadSpec, names: Sequence[str], protocol: LiveProtocol
) -> tuple[list[Request], int]:
    """The requests the live runner sends, warm-up then measured window, on one clock
    (measured ones from `protocol.measured_start_s`), and how many are measured."""
    trace = generate(workload, names=names)
    warm = _phase(trace, protocol.warmup_s) if protocol.warmup_s > 0 else []
    start = protocol.measured_start_s
    measured = [r._replace(arrival_s=start + r.arrival_s) for r in _phase(trace, protocol.duration_s)]
    return warm + measured, len(measured)


def simulate_live_run(
    config: SimConfig,
    workload: WorkloadSpec,
    policy: str,
    names: Sequence[str],
    protocol: LiveProtocol,
    seeds: Iterable[int],
) -> list[SimResult]:
    """The live run's requests through the simulated fleet, once per router seed (the
    trace is the live one, fixed by the workload's seed; the seed changes only the
    router's random choices, as a live round's timing does)."""
    trace, _ = protocol_trace(workload, names, protocol)
    catalog = Catalog()  # every adapter alike: the live runs' adapters are one rank and size
    config = dataclasses.replace(config, warmup_s=protocol.measured_start_s)
    return [
        simulate(dataclasses.replace(config, seed=seed), workload, policy, trace=trace, catalog=catalog)
        for seed in seeds
    ]


def relative_error(simulated: float, live: float) -> float:
    """(sim - live) / live: positive when the simulator is optimistic about throughput
    (or pessimistic about latency)."""
    if live == 0:
        raise ValueError("relative error against a live value of 0")
    return (simulated - live) / live


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def fit_decreasing(
    measure: Callable[[float], float], target: float, lo: float, hi: float, *, rel_tol: float = 1e-3, steps: int = 60
) -> float:
    """The x in [lo, hi] where a decreasing `measure(x)` meets `target`, by bisection.

    Why bisection and not a closed form: the simulated throughput at a load near
    capacity is a step-by-step outcome of batching, routing and the drain tail, not a
    formula; it falls monotonically (up to the simulator's discreteness) as every step
    gets dearer, which is all bisection needs. `lo` is returned when even `measure(lo)`
    is at or below the target (the term is not needed); a target below `measure(hi)`
    is an error (widen the bracket)."""
    if hi <= lo:
        raise ValueError("need lo < hi")
    if measure(lo) <= target:
        return lo
    if measure(hi) > target:
        raise ValueError(f"measure({hi}) is still above the target {target}: widen the bracket")
    for _ in range(steps):
        mid = (lo + hi) / 2
        if measure(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= rel_tol * hi:
            break
    return (lo + hi) / 2
