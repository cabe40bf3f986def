"""The simulator's toy cost model and workload, shared by the simulator's unit tests:
round numbers, so completion times and costs can be worked out by hand."""

from cluster.sim.cost import CostModel
from cluster.sim.workload import WorkloadSpec

TOY = CostModel(
    step_base_s=0.01,
    step_per_seq_s=0.005,
    step_per_adapter_s=0.0,
    prefill_per_token_s=0.001,
    store_load_s=0.1,
    cpu_to_gpu_s=0.02,
    max_num_seqs=4,
    gpu_slots=1,
    cpu_slots=1,
)

# The live benchmark's request shapes (prompts 32-96, 32-token outputs) over 8 adapters.
TOY_WORKLOAD = WorkloadSpec.from_dict({
    "adapters": 8, "zipf_s": 1.0, "rate": 5, "requests": 1_000_000,
    "prompt_tokens": {"kind": "uniform", "low": 32, "high": 96},
    "output_tokens": {"kind": "fixed", "mean": 32, "low": 1, "high": 32}, "seed": 1,
})
TOY_ADAPTER_NAMES = [f"bench-{i:04d}" for i in range(8)]
