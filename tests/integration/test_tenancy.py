"""Multi-tenancy on a real fleet with auth on: API keys, private adapters, per-key limits,
and a usage ledger whose counts match what clients were told, across a restart.

A second, small fleet (1 engine replica), started for this module only: the session
fleet runs with auth off, as the local demo does."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass, field

import httpx
import openai
import pytest
import yaml
from openai import AsyncOpenAI, OpenAI

from tests.conftest import TEST_ASSETS
from tests.integration.conftest import Fleet, _free_port, first_base_only, fleet_config, start_fleet, stop_fleet

PRIVATE = "acme-secret"  # a copy of poet, private to tenant acme
OWNED_PUBLIC = "haiku"  # public, owned by acme
LIMITS = {"max_tokens": 64, "max_n": 2, "max_prompt_tokens": 100}
# name: (key id, tenant, role, limits)
KEYS = {
    "admin": ("ops-admin", "ops", "admin", {}),
    "acme": ("acme-1", "acme", "tenant", {}),
    "beta": ("beta-1", "beta", "tenant", {}),
    "burst": ("burst-1", "burst", "tenant", {"requests_per_second": 1}),
    "budget": ("budget-1", "budget", "tenant", {"tokens_per_minute": 1200}),
    "meter": ("meter-1", "meter", "tenant", {}),
}


@dataclass
class TenantFleet:
    fleet: Fleet
    config: dict
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, who: str | None, **options) -> OpenAI:
        key = self.keys.get(who, who or "")
        return OpenAI(base_url=self.fleet.api, api_key=key, max_retries=0, timeout=120, **options)

    def get(self, path: str, who: str | None, **params) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return httpx.get(f"{self.fleet.base_url}{path}", headers=headers, params=params, timeout=60)

    def usage(self, who: str, **params) -> dict:
        response = self.get("/v1/usage", who, **params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def tenants(demo_assets) -> TenantFleet:
    from deployments.tenancy.keys import hash_key, new_key

    work = TEST_ASSETS / "tenancy"
    shutil.rmtree(work, ignore_errors=True)
    adapters = work / "adapters"
    shutil.copytree(demo_assets / "adapters", adapters, ignore=first_base_only())  # no stale ledger
    shutil.copytree(adapters / "poet", adapters / PRIVATE)
    (adapters / PRIVATE / "lorafleet-manifest.json").write_text(json.dumps({"owner": "acme", "visibility": "private"}))
    (adapters / OWNED_PUBLIC / "manifest.json").write_text(json.dumps({"owner": "acme", "visibility": "public"}))

    keys = {name: new_key() for name in KEYS}
    entries = [
        {"id": key_id, "tenant": tenant, "role": role, "sha256": hash_key(keys[name]), **({"limits": limits} if limits else {})}
        for name, (key_id, tenant, role, limits) in KEYS.items()
    ]
    (work / "keys.yaml").write_text(yaml.safe_dump({"keys": entries}))
    server = {"auth": {"enabled": True, "keys_file": str(work / "keys.yaml")}, "limits": LIMITS}
    config = fleet_config(demo_assets, adapters, num_replicas=1, server=server)
    state = TenantFleet(start_fleet(work, config), config, keys)
    yield state
    stop_fleet(state.fleet)


# ---- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["lf-not-a-real-key", "Bearer"])
def test_wrong_key_is_401_invalid_api_key(tenants, key):
    with pytest.raises(openai.AuthenticationError) as err:
        tenants.client(key).models.list()
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        tenants.client(key).completions.create(model=tenants.fleet.base_model, prompt="x", max_tokens=1)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic YWRtaW46YWRtaW4="}, {"Authorization": "Bearer"}])
def test_missing_key_is_401_in_the_openai_shape(tenants, headers):
    # (the openai client refuses to send an empty key, so this one goes by hand)
    url = f"{tenants.fleet.api}/completions"
    response = httpx.post(url, json={"model": tenants.fleet.base_model, "prompt": "x"}, headers=headers, timeout=60)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and "Authorization: Bearer" in error["message"]


def test_health_needs_no_key_but_fleet_internals_need_an_admin(tenants):
    assert tenants.get("/health", None).status_code == 200
    assert tenants.get("/fleet/replicas", None).status_code == 401
    denied = tenants.get("/fleet/placement", "acme")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    assert tenants.get("/fleet/replicas", "admin").status_code == 200


# ---- visibility ---------------------------------------------------------------------------------


def _models(tenants, who) -> set[str]:
    return {m.id for m in tenants.client(who).models.list().data}


def test_tenants_see_their_own_and_public_adapters_admins_see_all(tenants):
    acme, beta, admin = _models(tenants, "acme"), _models(tenants, "beta"), _models(tenants, "admin")
    assert PRIVATE in acme and PRIVATE in admin and PRIVATE not in beta
    assert acme == admin and beta == admin - {PRIVATE}
    assert {tenants.fleet.base_model, OWNED_PUBLIC, "poet"} <= beta


def test_someone_elses_private_adapter_is_the_same_404_as_a_missing_one(tenants):
    def attempt(model):
        with pytest.raises(openai.NotFoundError) as err:
            tenants.client("beta").completions.create(model=model, prompt="x", max_tokens=1)
        return err.value.response.json()

    hidden, missing = attempt(PRIVATE), attempt("no-such-adapter")
    assert json.dumps(hidden).replace(PRIVATE, "NAME") == json.dumps(missing).replace("no-such-adapter", "NAME")
    card_hidden, card_missing = tenants.get(f"/v1/models/{PRIVATE}", "beta"), tenants.get("/v1/models/nope", "beta")
    assert card_hidden.status_code == card_missing.status_code == 404
    assert card_hidden.text.replace(PRIVATE, "N") == card_missing.text.replace("nope", "N")
    reply = tenants.client("acme").completions.create(model=PRIVATE, prompt="x", max_tokens=2)
    assert reply.model == PRIVATE and reply.usage.completion_tokens == 2


# ---- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, param, limit",
    [
        ({"prompt": "x", "max_tokens": 65}, "max_tokens", "server.limits.max_tokens"),
        ({"prompt": "x", "max_tokens": 2, "n": 3}, "n", "server.limits.max_n"),
        ({"prompt": "y" * 150, "max_tokens": 2}, "prompt", "server.limits.max_prompt_tokens"),
    ],
)
def test_request_limits_are_400s_naming_the_limit(tenants, kwargs, param, limit):
    with pytest.raises(openai.BadRequestError) as err:
        tenants.client("acme").completions.create(model=tenants.fleet.base_model, **kwargs)
    body = err.value.response.json()["error"]
    assert body["param"] == param and limit in body["message"]


def test_chat_prompt_limit_counts_the_rendered_template(tenants):
    client = tenants.client("acme")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="poet", messages=[{"role": "user", "content": "z" * 90}], max_tokens=2)
    assert err.value.response.json()["error"]["param"] == "messages"  # 90 bytes + template > 100
    ok = client.chat.completions.create(model="poet", messages=[{"role": "user", "content": "z" * 40}], max_tokens=2)
    assert ok.usage.prompt_tokens <= LIMITS["max_prompt_tokens"]


def test_missing_max_tokens_is_capped_at_the_server_limit(tenants):
    reply = tenants.client("acme").completions.create(
        model=tenants.fleet.base_model, prompt="x", extra_body={"ignore_eos": True}
    )
    assert reply.usage.completion_tokens == LIMITS["max_tokens"]


def test_request_burst_gets_429_with_retry_after_then_passes(tenants):
    async def burst():
        client = AsyncOpenAI(base_url=tenants.fleet.api, api_key=tenants.keys["burst"], max_retries=0, timeout=120)
        calls = [client.completions.create(model=tenants.fleet.base_model, prompt="x", max_tokens=1) for _ in range(3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(limited) >= 1 and all(not isinstance(r, Exception) or r in limited for r in results), results
    for err in limited:
        assert err.response.headers["Retry-After"] == "1"
        assert err.code == "rate_limit_exceeded" and "1 requests per second" in err.message
    time.sleep(1.0)
    tenants.client("burst").completions.create(model=tenants.fleet.base_model, prompt="x", max_tokens=1)


def test_token_budget_429_retry_after_is_enough_and_not_more(tenants):
    client = tenants.client("budget")
    prompt = "t" * 90  # 91 tokens with BOS: each request reserves 92 of 1200 per minute (20/s)
    for _ in range(30):
        try:
            client.completions.create(model=tenants.fleet.base_model, prompt=prompt, max_tokens=1)
        except openai.RateLimitError as err:
            wait = int(err.response.headers["Retry-After"])
            assert err.response.json()["error"]["type"] == "tokens"
            break
    else:
        pytest.fail("1200 tokens per minute never ran out")
    assert 1 <= wait <= 5  # 92 tokens at 20 tokens/s: at most 4.6 s away
    time.sleep(wait)
    reply = client.completions.create(model=tenants.fleet.base_model, prompt=prompt, max_tokens=1)
    assert reply.usage.prompt_tokens == 91  # the ingress's count is the engine's


# ---- usage ledger -------------------------------------------------------------------------------


def _send_known_traffic(tenants) -> dict[str, list[int]]:
    """Completions and chat, streamed and not, base and adapters; returns the usage the
    client was told (or, for streams that did not ask for usage, what ignore_eos fixes)."""
    client = tenants.client("meter")
    base = tenants.fleet.base_model
    expected: dict[str, list[int]] = {}

    def add(model, prompt_tokens, completion_tokens):
        counts = expected.setdefault(model, [0, 0, 0])
        counts[0] += 1
        counts[1] += prompt_tokens
        counts[2] += completion_tokens

    one = client.completions.create(model=base, prompt="Count me in", max_tokens=5)
    add(base, one.usage.prompt_tokens, one.usage.completion_tokens)
    two = client.completions.create(model=OWNED_PUBLIC, prompt="Two choices", max_tokens=4, n=2)
    add(OWNED_PUBLIC, two.usage.prompt_tokens, two.usage.completion_tokens)
    messages = [{"role": "user", "content": "Hello there"}]
    three = client.chat.completions.create(model="poet", messages=messages, max_tokens=6)
    add("poet", three.usage.prompt_tokens, three.usage.completion_tokens)

    chunks = list(client.completions.create(
        model=OWNED_PUBLIC, prompt="Stream with usage", max_tokens=6, stream=True, stream_options={"include_usage": True}
    ))
    usage = chunks[-1].usage
    add(OWNED_PUBLIC, usage.prompt_tokens, usage.completion_tokens)

    chunks = list(client.completions.create(
        model=base, prompt="Count me in", max_tokens=7, stream=True, extra_body={"ignore_eos": True}
    ))
    assert all(c.usage is None for c in chunks)  # not asked for: the client gets none
    add(base, one.usage.prompt_tokens, 7)
    chunks = list(client.chat.completions.create(
        model="poet", messages=messages, max_tokens=5, stream=True, extra_body={"ignore_eos": True}
    ))
    assert all(c.usage is None for c in chunks)
    add("poet", three.usage.prompt_tokens, 5)
    return expected


def _ledger(report: dict, key_id: str) -> dict[str, list[int]]:
    return {
        r["adapter"]: [r["requests"], r["prompt_tokens"], r["completion_tokens"]]
        for r in report["data"]
        if r["key_id"] == key_id
    }


def test_usage_ledger_matches_client_usage_exactly_and_survives_a_restart(tenants):
    started = time.time()
    expected = _send_known_traffic(tenants)
    beta = tenants.client("beta").completions.create(model=OWNED_PUBLIC, prompt="beta uses acme's adapter", max_tokens=3)

    assert _ledger(tenants.usage("admin", key="meter-1"), "meter-1") == expected
    own = tenants.usage("meter")
    assert {r["tenant"] for r in own["data"]} == {"meter"}
    assert _ledger(own, "meter-1") == expected
    assert _ledger(tenants.usage("admin", key="meter-1", start=started + 3600), "meter-1") == {}

    # acme owns haiku: it sees others' use of it in aggregate, never who.
    acme = tenants.usage("acme")
    [haiku] = [t for t in acme["owned_adapters_other_tenants"] if t["adapter"] == OWNED_PUBLIC]
    assert haiku["requests"] == expected[OWNED_PUBLIC][0] + 1
    assert haiku["prompt_tokens"] == expected[OWNED_PUBLIC][1] + beta.usage.prompt_tokens
    assert "meter" not in json.dumps(acme) and "beta" not in json.dumps(acme)
    assert tenants.get("/v1/usage", "beta", tenant="acme").status_code == 403

    before = tenants.usage("admin")
    stop_fleet(tenants.fleet)
    port, metrics_port = _free_port(), _free_port()
    tenants.config["server"].update(port=port, metrics_port=metrics_port if metrics_port != port else port + 1)
    tenants.fleet = start_fleet(tenants.fleet.assets, tenants.config)
    assert tenants.usage("admin") == before
    assert _ledger(tenants.usage("admin", key="meter-1"), "meter-1") == expected
