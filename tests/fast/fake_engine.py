"""A fake engine with the real one's interface (deployments.engine.base.Engine).

It runs inside real Ray Serve replicas (the fast tier), so everything around the
engine is the product's own code: the ingress, the router, the controller, the
store, billing. What it generates is deterministic and says who produced it: the text
of token i is `<adapter>:<i> ` (`base` for the base model), so a test can assert
which adapter ran without a model. It loads adapters through the store (verified
files, as vLLM would get them), keeps an LRU residency like vLLM's, reports the same
stats, and when cancelled mid-generation reports the tokens it had produced, exactly
as the vLLM engine does. `TOKEN_DELAY_S` paces generation (one "decode step" per
token); subclasses change it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

from adapters.errors import AdapterInvalid, AdapterLoadError, AdapterNotFound
from cluster.residency import ResidencyTracker
from cluster.stats import ReplicaStats
from deployments.engine.base import Engine
from deployments.engine.protocol import AbortedUsage, Endpoint, EngineCall, FinalUsage, ResponseHead

PROMPT_TOKENS = 4  # every prompt counts as 4 tokens


class FakeEngine(Engine):
    TOKEN_DELAY_S = 0.005

    def __init__(self, config, replica_id: str, node_id: str = "", store=None):
        self.config = config
        self.replica_id = replica_id
        self.node_id = node_id
        self.store = store
        self.residency = ResidencyTracker(config.engine.max_loras, config.engine.max_cpu_loras)
        self.requests: dict[str, int] = {}
        self.running = 0
        self.generated_tokens = 0
        self.desired: tuple[str, ...] = ()
        self.aborted: list[AbortedUsage] = []
        self.unloadable: dict[str, None] = {}
        self.unservable: set[str] = set()

    async def start(self) -> None:
        await asyncio.sleep(0)

    async def check_health(self) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def stats(self) -> ReplicaStats:
        return ReplicaStats(
            replica_id=self.replica_id, pid=os.getpid(), node_id=self.node_id,
            gpu_slots=self.config.engine.max_loras, cpu_slots=self.config.engine.max_cpu_loras,
            gpu_resident=self.residency.gpu_resident(), cpu_resident=self.residency.cpu_resident(),
            running=self.running, per_adapter_requests=dict(self.requests), adapter_loads=self.residency.loads,
            generated_tokens=self.generated_tokens, desired=self.desired, unloadable=tuple(self.unloadable), ts=time.time(),
        )

    async def _ensure(self, spec) -> None:
        if spec.fingerprint in self.unservable:
            raise AdapterInvalid(f"The adapter `{spec.served_id}` cannot be loaded by the engine.", param="model")
        if spec.served_id not in self.residency.cpu:
            if self.store is not None:
                pin = await asyncio.to_thread(self.store.pin, spec)  # verified files, as vLLM would read
                pin.release()
            self.residency.loaded(spec.served_id)

    async def reconcile(self, desired_gpu, desired_cpu, resolve) -> list[str]:
        self.desired = tuple(desired_gpu) + tuple(desired_cpu)
        loaded = []
        for name in self.desired:
            if name in self.residency.cpu:
                continue
            try:
                await self._ensure(resolve(name))
            except (AdapterNotFound, AdapterInvalid, AdapterLoadError):
                self.unloadable[name] = None
                continue
            loaded.append(name)
        return loaded

    def take_aborted(self) -> list[AbortedUsage]:
        taken, self.aborted = self.aborted, []
        return taken

    def mark_unservable(self, fingerprints) -> None:
        self.unservable.update(fingerprints)

    async def generate(self, call: EngineCall):
        adapter = call.adapter
        label = adapter.served_id if adapter else "base"
        produced = 0
        self.running += 1
        try:
            if adapter is not None:
                await self._ensure(adapter)
            key = adapter.served_id if adapter else ""
            self.requests[key] = self.requests.get(key, 0) + 1
            tokens = int(call.body.get("max_tokens") or call.body.get("max_completion_tokens") or 16)
            stream = bool(call.body.get("stream"))
            rid = f"cmpl-{call.request_id}"
            yield ResponseHead(200, self.replica_id, stream)
            text = []
            for i in range(tokens):
                await asyncio.sleep(self.TOKEN_DELAY_S)
                if adapter is not None:
                    self.residency.ran([adapter.served_id])
                produced += 1
                piece = f"{label}:{i} "
                text.append(piece)
                if stream:
                    yield "data: " + json.dumps({"id": rid, "object": "text_completion", "model": label,
                                                 "choices": [{"index": 0, "text": piece, "finish_reason": None}]}) + "\n\n"
            usage = FinalUsage(PROMPT_TOKENS, produced)
            self.generated_tokens += produced
            if stream:
                yield "data: [DONE]\n\n"
            else:
                choice = ({"index": 0, "text": "".join(text), "finish_reason": "length"} if call.endpoint is Endpoint.COMPLETIONS
                          else {"index": 0, "message": {"role": "assistant", "content": "".join(text)}, "finish_reason": "length"})
                yield json.dumps({"id": rid, "object": "text_completion", "model": label, "choices": [choice],
                                  "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": produced,
                                            "total_tokens": PROMPT_TOKENS + produced}})
            yield usage
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.append(AbortedUsage(call.request_id, call.ingress_id, PROMPT_TOKENS, produced))
            raise
        finally:
            self.running -= 1


def request_id() -> str:
    return uuid.uuid4().hex
