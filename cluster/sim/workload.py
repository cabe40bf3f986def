"""Synthetic multi-adapter request traces, reproducible from a seed.

Pure and generic on purpose: the simulator consumes these traces, and a live HTTP
benchmark can replay the same ones against a real fleet (`generate` yields plain
`(arrival_s, adapter, prompt_tokens, output_tokens)` tuples; pass `names` to map
popularity ranks onto real adapter names).

Model: Poisson arrivals at `rate`; each request's adapter drawn from a Zipf law
over `adapters` (weight of popularity rank k is 1 / (k+1)^zipf_s: s = 0.5 is a
flat-ish tail, 1.0 the classic long tail, 1.5 a few adapters take most traffic);
prompt and output lengths from simple distributions. Three non-stationary scenarios:
`drift` reshuffles which adapter holds which popularity rank every `every_s`,
`burst` makes a cold adapter suddenly take a `share` of all traffic at `at_s`, and
`cycle` swings the arrival rate from `rate` up to `rate x peak` and back every
`period_s` (a daily cycle, compressed; arrivals by thinning a Poisson process at
the peak rate, so the arrival stream stays Poisson at every instant).

Independent random streams (arrivals, adapters, lengths, drift) are seeded from
`seed` separately, so e.g. changing the rate does not change which adapters the
requests ask for, only when: policies and rates are compared on the same mix.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from random import Random
from typing import NamedTuple


class Request(NamedTuple):
    arrival_s: float
    adapter: str | None  # None: a base-model request
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LengthDist:
    """A token-count distribution.

    kind "uniform": integers in [low, high]. kind "lognormal": exp(N(mu, sigma))
    with mu chosen so the mean is `mean`, rounded and clamped to [low, high].
    kind "fixed": always `mean`.
    """

    kind: str = "uniform"
    low: int = 32
    high: int = 256
    mean: float = 128.0
    sigma: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "lognormal", "fixed"):
            raise ValueError(f"unknown length distribution {self.kind!r}")
        if not 1 <= self.low <= self.high:
            raise ValueError(f"need 1 <= low <= high, got {self.low}, {self.high}")
        if self.mean < 1 or self.sigma < 0:
            raise ValueError("mean must be >= 1 and sigma >= 0")

    def sample(self, rng: Random) -> int:
        if self.kind == "uniform":
            return rng.randint(self.low, self.high)
        if self.kind == "fixed":
            return int(round(self.mean))
        mu = math.log(self.mean) - self.sigma**2 / 2
        return min(self.high, max(self.low, int(round(rng.lognormvariate(mu, self.sigma)))))

    def expected(self) -> float:
        """The mean (of the unclamped law for lognormal): for sizing offered loads."""
        if self.kind == "uniform":
            return (self.low + self.high) / 2
        return float(self.mean)


@dataclass(frozen=True)
class Drift:
    """Every `every_s` seconds, a random `fraction` of popularity ranks trade
    adapters (1.0: a full reshuffle)."""

    every_s: float
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.every_s <= 0 or not 0 < self.fraction <= 1:
            raise ValueError("drift needs every_s > 0 and fraction in (0, 1]")


@dataclass(frozen=True)
class Burst:
    """From `at_s` (for `duration_s`, or to the end when None) the adapter at
    popularity rank `rank` (default: the least popular) takes `share` of requests."""

    at_s: float
    share: float = 0.3
    rank: int | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.at_s < 0 or not 0 < self.share <= 1:
            raise ValueError("burst needs at_s >= 0 and share in (0, 1]")


@dataclass(frozen=True)
class Cycle:
    """The arrival rate swings smoothly from the workload's `rate` (trough, t = 0) to
    `rate x peak` (t = period_s / 2) and back (t = period_s), repeating:
    rate(t) = rate x (1 + (peak - 1) x (1 - cos(2 pi t / period_s)) / 2)."""

    period_s: float
    peak: float = 4.0

    def __post_init__(self) -> None:
        if self.period_s <= 0 or self.peak < 1:
            raise ValueError("cycle needs period_s > 0 and peak >= 1")

    def factor(self, t: float) -> float:
        return 1.0 + (self.peak - 1.0) * (1.0 - math.cos(2.0 * math.pi * t / self.period_s)) / 2.0

    def mean_factor(self) -> float:
        """The rate's average over a whole period, relative to the trough."""
        return (1.0 + self.peak) / 2.0


@dataclass(frozen=True)
class WorkloadSpec:
    adapters: int = 1000
    zipf_s: float = 1.0
    rate: float = 100.0  # requests per second
    requests: int = 10_000
    prompt_tokens: LengthDist = LengthDist("uniform", 64, 512)
    output_tokens: LengthDist = LengthDist("uniform", 32, 256)
    base_fraction: float = 0.0  # share of base-model requests (no adapter)
    drift: Drift | None = None
    burst: Burst | None = None
    cycle: Cycle | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.adapters < 1 or self.requests < 0 or self.rate <= 0:
            raise ValueError("need adapters >= 1, requests >= 0 and rate > 0")
        if self.zipf_s < 0 or not 0 <= self.base_fraction <= 1:
            raise ValueError("need zipf_s >= 0 and base_fraction in [0, 1]")
        if self.burst is not None and self.burst.rank is not None and not 0 <= self.burst.rank < self.adapters:
            raise ValueError(f"burst rank must be in [0, {self.adapters})")

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> WorkloadSpec:
        """From plain YAML/JSON data; nested `prompt_tokens`, `output_tokens`,
        `drift`, `burst` are mappings. Unknown keys are an error."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown workload keys: {', '.join(unknown)}")
        for key in ("prompt_tokens", "output_tokens"):
            if isinstance(data.get(key), Mapping):
                data[key] = LengthDist(**data[key])
        if isinstance(data.get("drift"), Mapping):
            data["drift"] = Drift(**data["drift"])
        if isinstance(data.get("burst"), Mapping):
            data["burst"] = Burst(**data["burst"])
        if isinstance(data.get("cycle"), Mapping):
            data["cycle"] = Cycle(**data["cycle"])
        return cls(**data)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def duration_s(self) -> float:
        """Expected length of the arrival window (with a cycle: exact for whole
        periods)."""
        return self.requests / (self.rate * (self.cycle.mean_factor() if self.cycle else 1.0))


def adapter_names(n: int, prefix: str = "adapter-") -> list[str]:
    """Default adapter names, zero-padded so they sort in index order."""
    width = max(4, len(str(n - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def zipf_weights(n: int, s: float) -> list[float]:
    """Normalised Zipf weights of ranks 0..n-1."""
    raw = [1.0 / (k + 1) ** s for k in range(n)]
    total = sum(raw)
    return [w / total for w in raw]


def generate(spec: WorkloadSpec, names: Sequence[str] | None = None) -> Iterator[Request]:
    """Yield the trace's requests in arrival order. O(log adapters) per request;
    nothing is materialised, so a million-request trace costs no memory."""
    names = list(names) if names is not None else adapter_names(spec.adapters)
    if len(names) != spec.adapters:
        raise ValueError(f"need {spec.adapters} names, got {len(names)}")
    arrivals = Random(f"{spec.seed}:arrivals")
    choice = Random(f"{spec.seed}:adapters")
    lengths = Random(f"{spec.seed}:lengths")
    shuffle = Random(f"{spec.seed}:popularity")

    cdf = list(accumulate(zipf_weights(spec.adapters, spec.zipf_s)))
    cdf[-1] = 1.0
    by_rank = list(names)  # popularity rank -> adapter name
    shuffle.shuffle(by_rank)
    burst = spec.burst
    burst_adapter = by_rank[burst.rank if burst.rank is not None else spec.adapters - 1] if burst else None
    drift = spec.drift
    next_drift = drift.every_s if drift else math.inf

    cycle = spec.cycle
    top = spec.rate * cycle.peak if cycle else spec.rate
    t = 0.0
    for _ in range(spec.requests):
        t += arrivals.expovariate(top)
        if cycle is not None:  # thinning: keep a candidate with probability rate(t) / top
            while arrivals.random() * cycle.peak > cycle.factor(t):
                t += arrivals.expovariate(top)
        while t >= next_drift:
            _reshuffle(by_rank, drift.fraction, shuffle)  # type: ignore[union-attr]
            next_drift += drift.every_s  # type: ignore[union-attr]
        u = choice.random()
        if spec.base_fraction and u < spec.base_fraction:
            adapter = None
        elif burst and _bursting(burst, t) and choice.random() < burst.share:
            adapter = burst_adapter
        else:
            adapter = by_rank[bisect.bisect_left(cdf, choice.random())]
        yield Request(t, adapter, spec.prompt_tokens.sample(lengths), spec.output_tokens.sample(lengths))


def _bursting(burst: Burst, t: float) -> bool:
    return t >= burst.at_s and (burst.duration_s is None or t < burst.at_s + burst.duration_s)


def _reshuffle(by_rank: list[str], fraction: float, rng: Random) -> None:
    if fraction >= 1.0:
        rng.shuffle(by_rank)
        return
    ranks = sorted(rng.sample(range(len(by_rank)), max(2, int(len(by_rank) * fraction))))
    moved = [by_rank[r] for r in ranks]
    rng.shuffle(moved)
    for r, name in zip(ranks, moved, strict=True):
        by_rank[r] = name


def with_rate(spec: WorkloadSpec, rate: float, *, keep_duration: bool = False) -> WorkloadSpec:
    """The same trace mix at another arrival rate. With `keep_duration`, the request
    count scales so the arrival window stays as long (a sweep at equal simulated time)."""
    requests = spec.requests
    if keep_duration:
        requests = max(1, int(round(spec.requests * rate / spec.rate)))
    return dataclasses.replace(spec, rate=rate, requests=requests)


def sweep_rates(max_rate: float, points: int = 6, low: float = 0.2) -> list[float]:
    """`points` evenly spaced rates from `low` x max_rate to max_rate: for a
    goodput-vs-load curve up to (and, with max_rate above capacity, past) saturation."""
    if points < 1 or max_rate <= 0 or not 0 < low <= 1:
        raise ValueError("need points >= 1, max_rate > 0 and low in (0, 1]")
    if points == 1:
        return [max_rate]
    return [max_rate * (low + (1 - low) * i / (points - 1)) for i in range(points)]
