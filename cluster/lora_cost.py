"""How much an adapter slows a decode step, relative to a rank-8 adapter on q/v.

Why a relative number and not milliseconds: the placement planner, the autoscaler
and the simulator only need to know that serving a rank-64, seven-module adapter
costs several times the step time of a rank-8 q/v one, to weigh demand by what it
costs (cost-aware packing). Milliseconds depend on the engine and the GPU; they live
in the simulator's cost model, per unit of this relative cost.

The shape comes from this machine's engine calibration (bench/README.md, "Engine
calibration"): at batch 64 a rank-8 q/v adapter adds 14.0 ms to a 6.1 ms base step
and a rank-64 adapter on all seven projections adds 53.0 ms, 3.8x as much for 28x
the LoRA parameters (rank x modules); at batch 16, 3.6x. A power law through those
points gives cost = (rank x modules / 16) ** 0.40. Fixed per-kernel overhead is why
it is so sublinear on the CPU; GPU kernels (punica SGMV) are closer to linear for
large ranks, so on a GPU cost-aware packing matters at least as much as modelled.
"""

from __future__ import annotations

REFERENCE_RANK = 8
REFERENCE_MODULES = 2  # q_proj, v_proj
EXPONENT = 0.40


def lora_cost(rank: int, modules: int) -> float:
    """Relative step cost of an adapter of `rank` on `modules` target modules
    (1.0 for rank 8 on two modules; 3.8 for rank 64 on all seven projections)."""
    if rank < 1 or modules < 1:
        raise ValueError(f"need rank >= 1 and modules >= 1, got {rank}, {modules}")
    return (rank * modules / (REFERENCE_RANK * REFERENCE_MODULES)) ** EXPONENT
