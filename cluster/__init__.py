"""The cluster's brain, pure Python: no Ray, no vLLM, no I/O.

Replica state snapshots, residency bookkeeping, and (in later work) the routing
policy and placement planner. Everything here is plain dataclasses and functions so
it runs in milliseconds in unit tests and identically in the simulator.
"""
