"""What a hostile tenant with a valid key can try against the API, and what it gets now.
Through the real app (deployments.api.app) with auth on, a real store and ledger, and a
scripted engine (tests/api_harness.py). Each test names what the code before this
change did."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from starlette.requests import Request

from adapters.archive import pack_folder
from deployments.api.body import read_capped, spool_capped
from deployments.errors import RequestTimeout
from adapters.errors import PayloadTooLarge
from factory.demo_assets import BASE_NAME
from tests.api_harness import ApiHarness

KB = 1024


@pytest.fixture
def store_root(tmp_path, demo_assets):
    root = tmp_path / "store"
    shutil.copytree(demo_assets / "adapters" / "poet", root / "poet")
    return root


@pytest.fixture
def api(tmp_path, store_root, demo_assets):
    return ApiHarness.create(tmp_path, store_root, demo_assets / "base",
                             config={"server": {"limits": {"max_prompt_tokens": 120, "max_n": 4}}})


def _as(api, who):
    return api.key(who)


# ---- bodies: capped while they arrive, with a deadline, before an admission slot -------


def _request(chunks, *, delay_s=0.0, headers=(), seen=None):
    async def receive():
        if not chunks:
            return {"type": "http.request", "body": b"", "more_body": False}
        if delay_s:
            await asyncio.sleep(delay_s)
        if seen is not None:
            seen()
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": list(headers), "query_string": b""}
    return Request(scope, receive)


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_cap_without_reading_the_rest():
    """Before: the completions body was capped, but admin JSON bodies were read whole first."""
    chunks = [b"x" * KB for _ in range(1000)]
    with pytest.raises(PayloadTooLarge, match="server.max_request_bytes"):
        asyncio.run(read_capped(_request(chunks), limit=8 * KB, deadline_s=5, setting="server.max_request_bytes"))
    assert len(chunks) > 980  # stopped right after the cap, the rest never read


def test_a_declared_length_over_the_cap_is_refused_before_any_byte_is_read():
    chunks = [b"x"]
    request = _request(chunks, headers=[(b"content-length", b"999999999")])
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_capped(request, limit=8 * KB, deadline_s=5, setting="server.max_request_bytes"))
    assert chunks == [b"x"]


def test_a_body_that_trickles_in_gets_408_at_the_deadline():
    chunks = [b"{" for _ in range(100)]
    with pytest.raises(RequestTimeout, match="server.body_read_timeout_s"):
        asyncio.run(read_capped(_request(chunks, delay_s=0.05), limit=8 * KB, deadline_s=0.3, setting="s"))


def test_an_upload_is_spooled_to_disk_and_capped(tmp_path):
    chunks = [b"y" * (64 * KB) for _ in range(8)]
    target = tmp_path / "body"
    assert asyncio.run(spool_capped(_request(list(chunks)), target, limit=1024 * KB, deadline_s=5, setting="s")) == 512 * KB
    assert target.stat().st_size == 512 * KB and target.stat().st_mode & 0o777 == 0o600
    with pytest.raises(PayloadTooLarge):
        asyncio.run(spool_capped(_request(list(chunks)), tmp_path / "b2", limit=100 * KB, deadline_s=5, setting="s"))


def test_a_slow_body_holds_no_admission_slot_while_it_is_read(api):
    """Before: a request took its admission slot first and then read its body, so slow
    clients could hold every slot."""
    from deployments.api.completions import Completions
    from deployments.engine.protocol import Endpoint

    in_flight_during_read = []
    body = b'{"model": "%s", "prompt": "hi", "max_tokens": 2}' % BASE_NAME.encode()
    request = _request([body[:10], body[10:]], delay_s=0.01, seen=lambda: in_flight_during_read.append(api.ctx.admission.in_flight),
                       headers=[(b"authorization", f"Bearer {api.keys['acme']}".encode())])
    response = asyncio.run(Completions(api.ctx).handle(request, Endpoint.COMPLETIONS))
    assert response.status_code == 200
    assert in_flight_during_read and set(in_flight_during_read) == {0}
    assert api.ctx.admission.in_flight == 0 and api.ctx.readers.in_flight == 0


def test_an_oversized_completion_body_is_a_413_naming_the_limit(api):
    response = api.client.post("/v1/completions", content=b"{" + b" " * (2 * 1024 * KB) + b"}",
                               headers={**_as(api, "acme"), "content-type": "application/json"})
    assert response.status_code == 413 and "server.max_request_bytes" in response.json()["error"]["message"]


# ---- numeric fields are strict: no "64" sneaking past max_n -----------------------------


@pytest.mark.parametrize("field, value", [("n", "64"), ("n", 64.0), ("n", True), ("max_tokens", "8"), ("max_tokens", 8.5),
                                          ("best_of", "9")])
def test_a_limit_field_that_is_not_an_integer_is_a_400_naming_it(api, field, value):
    """Before: n="64" skipped max_n and was reserved as n=1 while vLLM ran 64 choices."""
    body = {"model": BASE_NAME, "prompt": "hi", "max_tokens": 2, field: value}
    response = api.client.post("/v1/completions", json=body, headers=_as(api, "acme"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
    assert api.engine.calls == []


def test_n_above_the_limit_is_refused_before_the_engine(api):
    response = api.client.post("/v1/completions", json={"model": BASE_NAME, "prompt": "hi", "max_tokens": 2, "n": 5},
                               headers=_as(api, "acme"))
    assert response.status_code == 400 and "server.limits.max_n" in response.json()["error"]["message"]


# ---- prompt limits count what vLLM renders, tools and documents included ----------------


def test_tools_and_documents_count_against_max_prompt_tokens(api):
    """Before: only the messages were counted, so a prompt could hide in a tool schema."""
    messages = [{"role": "user", "content": "hi"}]
    small = {"model": BASE_NAME, "messages": messages, "max_tokens": 2}
    assert api.client.post("/v1/chat/completions", json=small, headers=_as(api, "acme")).status_code == 200
    counter = asyncio.run(api.ctx.prompt_counter())
    tools = [{"type": "function", "function": {"name": "lookup", "description": "d" * 400, "parameters": {"type": "object"}}}]
    from deployments.engine.protocol import Endpoint

    plain = counter(small, Endpoint.CHAT)[0]
    with_tools = counter({**small, "tools": tools}, Endpoint.CHAT)[0]
    with_docs = counter({**small, "documents": [{"title": "t", "text": "d" * 400}]}, Endpoint.CHAT)[0]
    # The demo template renders neither: the count falls back to counting them as text only
    # when the template cannot render them, and never below the messages alone.
    assert with_tools >= plain and with_docs >= plain


def test_a_template_that_renders_tools_counts_them(api):
    from deployments.api.prompt_tokens import PromptCounter
    from deployments.engine.protocol import Endpoint

    counter = asyncio.run(api.ctx.prompt_counter())
    template = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                "{% if tools %}{% for t in tools %}{{ t['function']['description'] }}{% endfor %}{% endif %}"
                "{% if documents %}{% for d in documents %}{{ d['text'] }}{% endfor %}{% endif %}")
    tokenizer = counter.tokenizer
    original = tokenizer.chat_template
    tokenizer.chat_template = template
    try:
        tools_counter = PromptCounter(tokenizer)
        body = {"messages": [{"role": "user", "content": "hi"}]}
        tools = [{"type": "function", "function": {"name": "f", "description": "d" * 300, "parameters": {}}}]
        plain = tools_counter(body, Endpoint.CHAT)[0]
        assert tools_counter({**body, "tools": tools}, Endpoint.CHAT)[0] >= plain + 300
        assert tools_counter({**body, "documents": [{"text": "e" * 200}]}, Endpoint.CHAT)[0] >= plain + 200
        assert tools_counter({**body, "chat_template_kwargs": {"tokenize": True, "chat_template": "x"}}, Endpoint.CHAT)[0] == plain
    finally:
        tokenizer.chat_template = original


# ---- private adapters stay invisible ----------------------------------------------------


def _upload(api, folder, name, who, **fields):
    return api.client.post("/v1/adapters", data={"name": name, **fields}, headers=_as(api, who),
                           files={"file": ("a.tar.gz", pack_folder(folder), "application/gzip")})


def test_a_listing_shows_a_tenant_no_private_version_numbers(api, demo_assets):
    """Before: a public adapter's listing showed every version number, private ones too."""
    haiku = demo_assets / "adapters" / "haiku"
    assert _upload(api, haiku, "mixed", "acme").status_code == 201
    assert _upload(api, haiku, "mixed", "acme", visibility="private").status_code == 201
    listed = {a["id"]: a for a in api.client.get("/v1/adapters", headers=_as(api, "beta")).json()["data"]}
    assert (listed["mixed"]["versions"], listed["mixed"]["latest"]) == (["1"], "1")
    shown = api.client.get("/v1/adapters/mixed", headers=_as(api, "beta")).json()
    assert (shown["versions"], shown["latest"], shown["version"]) == (["1"], "1", "1")
    assert api.client.get("/v1/adapters/mixed@2", headers=_as(api, "beta")).status_code == 404
    owner = api.client.get("/v1/adapters/mixed", headers=_as(api, "acme")).json()
    assert owner["versions"] == ["1", "2"]


def test_uploading_onto_a_privately_owned_name_answers_as_for_a_publicly_owned_one(api, demo_assets):
    haiku = demo_assets / "adapters" / "haiku"
    assert _upload(api, haiku, "secret-one", "acme", visibility="private").status_code == 201
    assert _upload(api, haiku, "public-one", "acme").status_code == 201
    private = _upload(api, haiku, "secret-one", "beta")
    public = _upload(api, haiku, "public-one", "beta")
    assert private.status_code == public.status_code == 403
    assert private.json()["error"]["message"].replace("secret-one", "N") == public.json()["error"]["message"].replace("public-one", "N")


# ---- every route authenticates and counts against the key's rate ------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_the_api_description_needs_a_key_when_auth_is_on(api, path):
    """Before: /docs, /redoc and /openapi.json were public on an auth-enabled fleet."""
    assert api.client.get(path, headers={"Authorization": ""}).status_code == 401
    assert api.client.get(path, headers=_as(api, "beta")).status_code == 200


def test_admin_listing_usage_and_archive_routes_count_against_the_keys_rate(tmp_path, store_root, demo_assets):
    """Before: only completions were rate-limited, so listings and archives could be hammered."""
    api = ApiHarness.create(tmp_path, store_root, demo_assets / "base",
                            config={"server": {"limits": {"requests_per_second": 1}}})
    for path in ("/v1/adapters", "/v1/usage", "/v1/adapters/poet/archive", "/v1/models"):
        first = api.client.get(path, headers=_as(api, "acme"))
        second = api.client.get(path, headers=_as(api, "acme"))
        assert first.status_code == 200, (path, first.text)
        assert second.status_code == 429 and second.headers["Retry-After"], path
        api.ctx.limiter._requests.clear()  # a fresh second for the next route


def test_uploads_beyond_the_concurrency_cap_get_503_naming_it(tmp_path, store_root, demo_assets):
    api = ApiHarness.create(tmp_path, store_root, demo_assets / "base", config={"adapters": {"max_concurrent_uploads": 1}})
    held = api.ctx.uploads.try_enter()  # another upload is being processed
    response = _upload(api, demo_assets / "adapters" / "haiku", "later", "acme")
    assert response.status_code == 503 and "adapters.max_concurrent_uploads" in response.json()["error"]["message"]
    assert response.headers["Retry-After"]
    held.release()
    assert _upload(api, demo_assets / "adapters" / "haiku", "later", "acme").status_code == 201


# ---- the event loop is never blocked by the store ---------------------------------------


def test_a_slow_store_does_not_block_the_event_loop(api):
    """/v1/models waits on a store listing that only returns once /health has been
    answered: if the listing ran on the event loop, /health could never be answered and
    the listing would give up (a deadlock turned into a failure, no timing threshold)."""
    import threading

    import httpx

    health_answered = threading.Event()
    listed = []
    names = api.ctx.store.names

    def slow_names():
        listed.append(health_answered.wait(timeout=10))
        return names()

    api.ctx.store.names = slow_names

    async def scenario():
        transport = httpx.ASGITransport(app=api.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=api.key("acme")) as client:
            models = asyncio.ensure_future(client.get("/v1/models"))
            await asyncio.sleep(0.05)  # the listing is under way
            health = await client.get("/health")
            health_answered.set()
            return health.status_code, (await models).status_code

    assert asyncio.run(scenario()) == (200, 200)
    assert listed == [True]


# ---- storage quotas answer 403 naming the limit -------------------------------------------


def test_an_upload_over_the_tenants_storage_quota_is_a_403_naming_the_field(tmp_path, store_root, demo_assets):
    api = ApiHarness.create(tmp_path, store_root, demo_assets / "base", config={"adapters": {"tenant_max_versions": 2}})
    haiku = demo_assets / "adapters" / "haiku"
    assert _upload(api, haiku, "q1", "acme").status_code == 201
    assert _upload(api, haiku, "q1", "acme").status_code == 201
    refused = _upload(api, haiku, "q1", "acme")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "quota_exceeded"
    assert "adapters.tenant_max_versions" in refused.json()["error"]["message"]
    assert _upload(api, haiku, "b1", "beta").status_code == 201  # another tenant's own quota
