"""How long a simulated replica takes to do things: the simulator's only physics.

A decode step of vLLM's continuous batching costs roughly a fixed part (weights read
once per step), a part per sequence in the batch (attention over its KV cache,
sampling), a part per distinct LoRA adapter in the batch (the punica kernels
gather one more set of LoRA weights) and a part per sequence that runs a LoRA
(its shrink/expand products). The two LoRA parts are per unit of an adapter's
relative cost (`cluster.lora_cost`: 1.0 for rank 8 on q/v, more for larger ranks
and more target modules), so a rank-64 seven-module adapter slows a step more than
a rank-8 one. Prefill costs per prompt token. Moving an
adapter costs a read from the store into host memory, then a copy into a GPU slot.
Those few numbers are what decides whether a placement policy wins, so they are one
frozen dataclass that can be calibrated from measurements (`from_json`).

One more term is not the engine's: `host_per_token_s`, the CPU the *serving path*
spends per output token (HTTP proxy, ingress, Ray's metrics agent, the replica's actor,
the online engine's own bookkeeping beyond the offline step) on the cores the engine
runs on. Where the serving path has cores of its own (a GPU node: the engine's work is
on the GPU and dozens of host cores are free) it overlaps with the steps and costs
nothing here: 0, the default. On a CPU-only machine it competes with the engine for
the same cores, so a core that produces a step's `batch` tokens also pays their host
CPU: it is added to the step once per sequence in the batch (`step_s`). That is a
work-conserving core shared between the engine and the host work its own tokens
cause; it assumes each replica has its core(s) and the host work spreads over the
cores in proportion to the tokens each produces. An offline step fit (one engine fed
by a Python loop) cannot see this term; it comes from a served fleet
(bench/sim_calibration.py).

JSON format (every key optional; missing keys keep the `gpu_like()` value; unknown
keys are an error so a typo does not silently calibrate nothing):

    {
      "format": "lorafleet-cost-model/1",        # optional, checked if present
      "source": "free text: machine, model, vLLM version, date",   # ignored
      "step_base_s": 0.02276,
      "step_per_seq_s": 0.000238,
      "step_per_adapter_s": 0.002,
      "step_per_lora_seq_s": 0.0,
      "host_per_token_s": 0.0,                  # serving path's CPU on the engine's cores
      "prefill_per_token_s": 0.0001,
      "store_load_s": 0.15,
      "cpu_to_gpu_s": 0.01,
      "max_num_seqs": 64,
      "gpu_slots": 8,
      "cpu_slots": 32,
      "step_measurements": [                      # optional, instead of step_*_s
        {"batch": 1, "adapters": 1, "step_s": 0.025},
        {"batch": 64, "adapters": 1, "step_s": 0.040},
        {"batch": 64, "adapters": 8, "step_s": 0.054}
      ]
    }

With `step_measurements`, the three step coefficients are fitted by least squares
(step_s = base + per_seq * batch + per_adapter * adapters); if every measurement has
the same number of adapters, `step_per_adapter_s` must be given and only the other
two are fitted. Giving both measurements and a fitted coefficient is an error.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "lorafleet-cost-model/1"
_STEP_KEYS = ("step_base_s", "step_per_seq_s", "step_per_adapter_s")
_IGNORED_KEYS = ("format", "source")


@dataclass(frozen=True)
class CostModel:
    """Timings of one engine replica. Defaults: `gpu_like()`."""

    step_base_s: float = field(default=0.02276, metadata={"description": "Decode step time independent of the batch, s."})
    step_per_seq_s: float = field(default=0.000238, metadata={"description": "Added step time per sequence in the batch, s."})
    step_per_adapter_s: float = field(default=0.002, metadata={"description": "Added step time per distinct adapter in the batch (per unit of relative LoRA cost), s."})
    step_per_lora_seq_s: float = field(default=0.0, metadata={"description": "Added step time per sequence running a LoRA (per unit of relative LoRA cost), s."})
    host_per_token_s: float = field(default=0.0, metadata={"description": "Serving-path CPU per output token spent on the engine's own cores (0 where the serving path has cores of its own, as on a GPU node); added to a step once per sequence in it, s."})
    prefill_per_token_s: float = field(default=0.0001, metadata={"description": "Prefill time per prompt token, added to the step that admits the request, s."})
    store_load_s: float = field(default=0.15, metadata={"description": "Reading an adapter from the store into host memory, s."})
    cpu_to_gpu_s: float = field(default=0.01, metadata={"description": "Copying an adapter from host memory into a GPU slot, s."})
    max_num_seqs: int = field(default=64, metadata={"description": "Most sequences in one batch (vLLM max_num_seqs)."})
    gpu_slots: int = field(default=8, metadata={"description": "LoRA slots on the GPU (vLLM max_loras): most distinct adapters in a batch."})
    cpu_slots: int = field(default=32, metadata={"description": "Adapters held in host memory, GPU ones included (vLLM max_cpu_loras)."})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value}")
        if self.max_num_seqs < 1 or self.gpu_slots < 1:
            raise ValueError("max_num_seqs and gpu_slots must be >= 1")
        if self.cpu_slots < self.gpu_slots:
            raise ValueError(
                f"cpu_slots ({self.cpu_slots}) must be >= gpu_slots ({self.gpu_slots}): "
                "host memory holds the GPU adapters too, as vLLM's max_cpu_loras does"
            )
        if self.step_base_s + self.step_per_seq_s <= 0:
            raise ValueError("a decode step must take some time")

    def step_s(self, batch: int, adapters: float, lora_seqs: float = 0.0) -> float:
        """One decode step with `batch` sequences from `adapters` distinct adapters, of
        which `lora_seqs` run a LoRA. Both LoRA counts are weighted by each adapter's
        relative cost when adapters differ (a rank-64 adapter counts as several).

        The step also carries the host CPU of the `batch` tokens it produces
        (`host_per_token_s`, 0 unless the serving path shares the engine's cores): on
        a shared core the next step cannot start before that work is done."""
        return (
            self.step_base_s
            + (self.step_per_seq_s + self.host_per_token_s) * batch
            + self.step_per_adapter_s * adapters
            + self.step_per_lora_seq_s * lora_seqs
        )

    def token_s_at_full_batch(self) -> float:
        """Replica-seconds per generated token in the cheapest possible step: a full
        batch (max_num_seqs) with no LoRA at all. No schedule in this cost model
        produces a token for less, since step_s(b, 0) / b falls with b and every LoRA
        term only adds: the basis of the replica lower bound (see simulator.py)."""
        n = self.max_num_seqs
        return self.step_s(n, 0) / n

    def capacity_rps(self, mean_prompt: float, mean_output: float, adapters_per_batch: int = 1) -> float:
        """Requests/s one replica sustains with a full batch and no adapter loads:
        an upper bound used to pick offered loads (fractions of it) for sweeps."""
        n = self.max_num_seqs
        seconds = mean_output * self.step_s(n, min(adapters_per_batch, self.gpu_slots))
        seconds += n * mean_prompt * self.prefill_per_token_s  # every request's prefill, once
        return n / seconds

    @classmethod
    def gpu_like(cls) -> CostModel:
        """An 8B model on an A100-class GPU: a step takes ~25 ms at batch 1 and ~40 ms
        at batch 64 with one adapter, +2 ms per further distinct adapter; prefill
        0.1 ms/token (~10k tokens/s); 150 ms to read an adapter from the store, 10 ms
        to copy it into a slot; 64 sequences, 8 GPU slots, 32 adapters in host memory."""
        return cls()

    @classmethod
    def from_dict(cls, data: Mapping[str, object], base: CostModel | None = None) -> CostModel:
        """Build from the JSON format above, on top of `base` (default gpu_like)."""
        data = dict(data)
        fmt = data.get("format")
        if fmt is not None and fmt != FORMAT:
            raise ValueError(f"unknown cost model format {fmt!r}, expected {FORMAT!r}")
        for key in _IGNORED_KEYS:
            data.pop(key, None)
        measurements = data.pop("step_measurements", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown cost model keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if measurements is not None:
            fitted = fit_step(measurements, data.get("step_per_adapter_s"))
            clash = [k for k in fitted if k in data and k != "step_per_adapter_s"]
            if clash:
                raise ValueError(f"give either step_measurements or {', '.join(clash)}, not both")
            data.update(fitted)
        return dataclasses.replace(base or cls.gpu_like(), **data)

    @classmethod
    def from_json(cls, path: str | Path) -> CostModel:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def to_dict(self) -> dict[str, object]:
        return {"format": FORMAT, **dataclasses.asdict(self)}


def fit_step(
    measurements: Sequence[Mapping[str, float]], per_adapter: float | None = None
) -> dict[str, float]:
    """Least-squares step coefficients from measured (batch, adapters, step_s).

    Why a fit and not three hand-picked numbers: measured step times are noisy
    (±30% on a busy CPU machine), and a fit over many points averages that out. If
    `adapters` does not vary, its coefficient is not identifiable: pass it in.
    """
    rows = []
    for m in measurements:
        try:
            rows.append((float(m["batch"]), float(m["adapters"]), float(m["step_s"])))
        except KeyError as e:
            raise ValueError(f"a step measurement needs batch, adapters and step_s: {m!r}") from e
    vary_adapters = len({a for _, a, _ in rows}) > 1
    if vary_adapters and per_adapter is None:
        coef = _least_squares([[1.0, b, a] for b, a, _ in rows], [y for _, _, y in rows])
        base, per_seq, per_adapter = coef
    else:
        if per_adapter is None:
            raise ValueError(
                "step_measurements all have the same number of adapters: "
                "give step_per_adapter_s as well"
            )
        ys = [y - per_adapter * a for _, a, y in rows]
        base, per_seq = _least_squares([[1.0, b] for b, _, _ in rows], ys)
    if len({b for b, _, _ in rows}) < 2:
        raise ValueError("step_measurements need at least two different batch sizes")
    return {"step_base_s": base, "step_per_seq_s": per_seq, "step_per_adapter_s": float(per_adapter)}


def _least_squares(x: list[list[float]], y: list[float]) -> list[float]:
    """Solve the normal equations (X^T X) c = X^T y by Gauss-Jordan elimination;
    a handful of unknowns, so no numpy in the pure package."""
    n = len(x[0])
    if len(x) < n:
        raise ValueError(f"need at least {n} step measurements, got {len(x)}")
    a = [
        [sum(r[i] * r[j] for r in x) for j in range(n)] + [sum(r[i] * v for r, v in zip(x, y, strict=True))]
        for i in range(n)
    ]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            raise ValueError("step_measurements do not determine the coefficients (vary batch and adapters)")
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(n):
            if r != col:
                factor = a[r][col] / a[col][col]
                a[r] = [v - factor * p for v, p in zip(a[r], a[col], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]
