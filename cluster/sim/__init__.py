"""Discrete-event simulation of a lorafleet fleet, running the real router, planner
and autoscaler.

    workload.py        WorkloadSpec -> generate() -> (arrival_s, adapter, prompt, output)
    catalog.py         the adapters: rank, target modules, step cost, store read time
    cost.py            CostModel: step, prefill and adapter-load times (calibratable JSON)
    replica.py         SimReplica: continuous batching, LoRA slots, host cache, loads,
                       draining; talks to its host through the ReplicaHost protocol
    policies.py        policy names: routing [+controller] [+autoscale | +ray_autoscale]
    simulator.py       Simulator: event heap; cluster.routing policies over a ClusterView
                       rebuilt per stats period; cluster.placement.PlacementLoop as the
                       controller; a fleet that grows and drains; SimResult yardsticks
    scenario.py        YAML scenarios (bench/workloads/sim-*.yaml, autoscale-*.yaml)
    summary.py         median and range over seeds
    provenance.py      result header: date, commit, machine
    cli.py             `lorafleet sim --workload FILE [--policies ...] [--out JSON]`
    report.py          result JSON -> markdown tables

Nothing here imports Ray or vLLM: only the engines are simulated; the policies,
the view, the in-flight tracker, the demand estimator and the planner are the
production code. No re-exports here on purpose: the live HTTP benchmark imports
`cluster.sim.workload` alone and should not pull in the simulator.
"""
