"""The engine interface a replica runs: what `EngineReplica` needs, and nothing of vLLM.

`VLLMEngine` is the real one; tests run the same Ray Serve glue over a fake with this
interface (tests/fast/fake_engine.py), so routing, placement, billing and the ingress
are exercised end to end in seconds. A replica builds its engine from an import path
(`engine_factory`), called as `factory(config, replica_id, node_id=..., store=...)`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable

from adapters.validation import AdapterSpec
from cluster.stats import ReplicaStats
from deployments.engine.protocol import AbortedUsage, EngineCall

VLLM_ENGINE = "deployments.engine.vllm_engine:VLLMEngine"


class Engine(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model; the replica serves once this returns."""

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Raise if the engine is dead, so Ray Serve replaces the replica."""

    @abc.abstractmethod
    def shutdown(self) -> None: ...

    @abc.abstractmethod
    def stats(self) -> ReplicaStats:
        """What routers and the controller see of this replica (cluster/stats.py)."""

    @abc.abstractmethod
    async def reconcile(self, desired_gpu: list[str], desired_cpu: list[str],
                        resolve: Callable[[str], AdapterSpec]) -> list[str]:
        """Move toward the placement controller's desired set; return the adapters loaded."""

    @abc.abstractmethod
    def generate(self, call: EngineCall) -> AsyncIterator[object]:
        """Yield a ResponseHead, then body strings, then (completed) one FinalUsage. When
        the caller cancels mid-way, what was produced is queued for `take_aborted`."""

    @abc.abstractmethod
    def take_aborted(self) -> list[AbortedUsage]:
        """Usage of requests stopped mid-generation since the last call (for the bills)."""

    def take_unservable(self) -> list[str]:
        """Fingerprints of adapter contents this engine refused since the last call (they
        are spread fleet-wide by the controller). Default: none."""
        return []

    def mark_unservable(self, fingerprints: list[str]) -> None:
        """Adapter contents the fleet found unloadable: refuse them without trying (default: no-op)."""


def load_engine_factory(path: str) -> Callable[..., Engine]:
    """`module:attr` -> the engine class or factory function."""
    import importlib

    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"engine factory {path!r}: use 'module:attribute'")
    return getattr(importlib.import_module(module), attr)
