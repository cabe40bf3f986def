"""The whole HTTP API of one ingress replica, without Ray: `deployments.api.app.build_api`
over a real adapter store, real keys (auth on), a real usage ledger, and scripted
engine and fleet clients. What a test sees is exactly what a client of the real
ingress sees; only the engine replicas behind it are fakes.

    api = ApiHarness.create(tmp_path, store_root, base_dir)
    api.client.post("/v1/completions", json=..., headers=api.key("acme"))
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from deployments.adapter_store import open_adapter_store
from deployments.api.app import build_api
from deployments.api.context import ApiContext, build_context
from deployments.config import parse_config
from deployments.engine.protocol import AbortedUsage, EngineCall, FinalUsage, ResponseHead
from deployments.errors import EngineDead
from deployments.tenancy.keys import hash_key
from factory.demo_assets import BASE_NAME

TENANTS = ("acme", "beta")


class FakeStream:
    """A scripted engine answer: `items` after the head; exceptions in it are raised."""

    def __init__(self, head: ResponseHead, items: list, on_cancel=None):
        self.head = head
        self._items = list(items)
        self.cancelled = False
        self._on_cancel = on_cancel

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        for item in self._items:
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, float):  # a pause, in seconds (a slow engine)
                await asyncio.sleep(item)
                continue
            yield item

    def cancel(self) -> None:
        self.cancelled = True
        if self._on_cancel is not None:
            self._on_cancel()


def completion_body(call: EngineCall, tokens: int) -> str:
    text = "x" * tokens
    return json.dumps({"id": f"cmpl-{call.request_id}", "object": "text_completion", "model": "m",
                       "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": 3 + tokens}})


def sse_chunks(call: EngineCall, tokens: int) -> list[str]:
    chunks = [f'data: {{"id":"cmpl-{call.request_id}","choices":[{{"index":0,"text":"x"}}]}}\n\n' for _ in range(tokens)]
    return chunks + ["data: [DONE]\n\n"]


@dataclass
class FakeEngineClient:
    """Answers every call with `tokens` tokens (streamed or JSON) and the matching
    FinalUsage, unless a test scripts `next_streams`. Records every call."""

    tokens: int = 4
    prompt_tokens: int = 3
    delay_s: float = 0.0  # pause before each streamed token
    calls: list[EngineCall] = field(default_factory=list)
    avoided: list[str | None] = field(default_factory=list)
    next_streams: list = field(default_factory=list)  # FakeStream or an exception to raise from open()
    opened: list[FakeStream] = field(default_factory=list)

    async def open(self, call: EngineCall, *, avoid_replica: str | None = None) -> FakeStream:
        self.calls.append(call)
        self.avoided.append(avoid_replica)
        if self.next_streams:
            scripted = self.next_streams.pop(0)
            if isinstance(scripted, BaseException):
                raise scripted
            self.opened.append(scripted)
            return scripted
        usage = FinalUsage(self.prompt_tokens, self.tokens)
        if call.body.get("stream"):
            items: list = []
            for chunk in sse_chunks(call, self.tokens):
                if self.delay_s:
                    items.append(self.delay_s)
                items.append(chunk)
            stream = FakeStream(ResponseHead(200, "fake-0", True), items[:-1] + [usage, items[-1]])
        else:
            stream = FakeStream(ResponseHead(200, "fake-0", False), ([self.delay_s] if self.delay_s else [])
                                + [completion_body(call, self.tokens), usage])
        self.opened.append(stream)
        return stream


@dataclass
class FakeFleetClient:
    aborted: list[AbortedUsage] = field(default_factory=list)

    async def replicas(self) -> list[dict]:
        return []

    async def placement(self) -> dict:
        return {"enabled": False, "plans": 0, "replicas": {}}

    async def take_aborted_usage(self, ingress_id: str, wait_s: float, held_back: dict[str, int] | None = None) -> list[AbortedUsage]:
        taken = [r for r in self.aborted if r.ingress_id == ingress_id]
        self.aborted = [r for r in self.aborted if r.ingress_id != ingress_id]
        return taken


@dataclass
class ApiHarness:
    ctx: ApiContext
    client: TestClient
    engine: FakeEngineClient
    fleet: FakeFleetClient
    keys: dict[str, str]  # "admin" and each tenant -> its API key

    def key(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    @classmethod
    def create(cls, work: Path, store_root: Path, base: Path, *, config: dict | None = None,
               engine: FakeEngineClient | None = None, auth: bool = True) -> "ApiHarness":
        keys = {"admin": "lf-test-admin-key", **{t: f"lf-test-{t}-key" for t in TENANTS}}
        entries = [{"id": "admin", "tenant": "ops", "role": "admin", "sha256": hash_key(keys["admin"])}]
        entries += [{"id": t, "tenant": t, "role": "tenant", "sha256": hash_key(keys[t])} for t in TENANTS]
        keys_file = work / "keys.yaml"
        keys_file.write_text(yaml.safe_dump({"keys": entries}))
        raw = {
            "model": {"source": str(base), "served_name": BASE_NAME},
            "adapters": {"uri": str(store_root), "cache_dir": str(work / "cache")},
            "server": {"auth": {"enabled": auth, "keys_file": str(keys_file)},
                       "usage": {"ledger_path": str(work / "usage.sqlite")}},
        }
        for section, values in (config or {}).items():
            raw[section] = _merge(raw.get(section, {}), values)
        parsed = parse_config(raw)
        store = open_adapter_store(parsed)
        engine = engine or FakeEngineClient()
        fleet = FakeFleetClient()
        ctx = build_context(parsed, store, engine=engine, fleet=fleet, ingress_id="ingress-test")
        # Requests carry the admin's key unless a test passes another `Authorization`.
        client = TestClient(build_api(ctx), raise_server_exceptions=False,
                            headers={"Authorization": f"Bearer {keys['admin']}"})
        return cls(ctx, client, engine, fleet, keys)

    def usage_rows(self) -> list[dict]:
        return self.client.get("/v1/usage", headers=self.key("admin")).json()["data"]


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
