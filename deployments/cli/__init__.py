"""The `lorafleet` command (`main`): serve, keys, adapters, check-config, and the
factory's and simulator's commands. `bench` is a source-tree tool (it needs the
checkout's `bench/` package and plans)."""

from deployments.cli.main import main

__all__ = ["main"]
