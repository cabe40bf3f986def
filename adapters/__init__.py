"""Adapters as artifacts: validation, the store, and the demo asset builder.

The lowest layer of lorafleet: it imports nothing from `cluster/` or `deployments/`.
"""
