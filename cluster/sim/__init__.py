"""Discrete-event simulation of a lorafleet fleet, running the real router and planner.

    workload.py   WorkloadSpec -> generate() -> (arrival_s, adapter, prompt, output)
    cost.py       CostModel: step, prefill and adapter-load times (calibratable JSON)
    replica.py    SimReplica: continuous batching, LoRA slots, host cache, loads
    simulator.py  Simulator: event heap; cluster.routing policies over a ClusterView
                  rebuilt per stats period; cluster.placement.PlacementLoop as the
                  controller; the oracle; SimResult metrics
    scenario.py   YAML scenarios (bench/workloads/sim-*.yaml)
    cli.py        `lorafleet sim --workload FILE [--policies ...] [--out JSON]`
    report.py     result JSON -> markdown tables

Nothing here imports Ray or vLLM: only the engines are simulated; the policies,
the view, the in-flight tracker, the demand estimator and the planner are the
production code. No re-exports here on purpose: the live HTTP benchmark imports
`cluster.sim.workload` alone and should not pull in the simulator.
"""
