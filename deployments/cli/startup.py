"""Start-up progress of `lorafleet serve`: what Serve's status says, in words.

Serve reports each deployment's replicas by state (STARTING, RUNNING, ...). This turns
successive reads into the lines a person needs: each engine replica as it becomes
ready, and for replicas still starting after a while, which and why: waiting for
resources the cluster does not have free (named, with what is free), pending for a
reason Serve gives, or simply busy starting (importing vLLM and loading the model).
A line is repeated only when its reason changes or a minute has passed. Resources and
the clock are injected, so the wording is tested without Ray.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from deployments.cli.resources import Ask, shortfall

ENGINE = "EngineReplica"
PENDING_REPORT_AFTER_S = 15.0  # a replica starting longer than this gets a line saying why
REPEAT_AFTER_S = 60.0


class StartupWatch:
    def __init__(self, console, asks: tuple[Ask, ...], num_replicas: int, *,
                 free_resources: Callable[[], dict], clock: Callable[[], float] = time.monotonic):
        self.console = console
        self.asks = {a.deployment: a for a in asks}
        self.num_replicas = num_replicas
        self.free_resources = free_resources
        self.clock = clock
        self.ready = 0
        self.started = clock()
        self._said: dict[str, tuple[float, str]] = {}

    def update(self, app: dict) -> None:
        """`app`: {"deployments": {name: an object with `replica_states` and `message`}}."""
        now = self.clock()
        deployments = app.get("deployments", {})
        # every base's engine deployment (EngineReplica, EngineReplica-<base>) counts
        running = sum({str(getattr(k, "value", k)): v for k, v in info.replica_states.items()}.get("RUNNING", 0)
                      for name, info in deployments.items() if name.startswith(ENGINE))
        if running > self.ready:
            for k in range(self.ready + 1, running + 1):
                self.console.step(f"engine replica {k}/{self.num_replicas} ready ({now - self.started:.0f} s after deploying)")
            self.ready = running
        for name, info in deployments.items():
            states = {str(getattr(k, "value", k)): v for k, v in info.replica_states.items()}
            starting = states.get("STARTING", 0) + states.get("RECOVERING", 0)
            if not starting or now - self.started < PENDING_REPORT_AFTER_S:
                continue
            state = self._state(name, info.message or "")
            last = self._said.get(name)
            if last is None or last[1] != state or now - last[0] > REPEAT_AFTER_S:
                self._said[name] = (now, state)
                self.console.step(f"{name}: {starting} replica(s) {now - self.started:.0f} s after deploying: {state}")

    def _state(self, name: str, message: str) -> str:
        ask = self.asks.get(name)
        if ask is not None:
            free = self.free_resources()
            why = shortfall(ask, free.get("CPU", 0.0), free.get("GPU", 0.0))
            if why:
                return f"pending: waiting for resources: {why}"
        if "schedul" in message:
            return f"pending: {message}"
        if name.startswith(ENGINE):
            return "starting (importing vLLM and loading the model; its log is in the log folder)"
        return "starting"
