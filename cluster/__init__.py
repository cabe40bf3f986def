"""The cluster's brain, pure Python: no Ray, no vLLM, no I/O.

    stats.py       the replica-stats contract every engine replica reports
    residency.py   the GPU-slot / host-memory residency mirror (LRU, as vLLM evicts)
    labels.py      bounded metric labels for thousands of adapters
    routing/       the routing policy: sampling -> filters -> scorers -> picker
    placement/     demand estimate -> plan -> diff: which replica holds which adapter
    sim/           the discrete-event simulator running the same routing and placement code

May import only the standard library and itself (tests/unit/test_layers.py): the Ray
glue in `deployments/serve/` translates Ray's objects into these dataclasses, so every
policy runs in milliseconds in unit tests and identically in the simulator.
"""
