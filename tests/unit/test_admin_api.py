"""The registry API's upload checks, through HTTP against a real local store: every
bad upload gets a 400/413/409 naming the problem, and the store is left unchanged."""

from __future__ import annotations

import functools
import io
import os
import json
import shutil
import tarfile

import pytest
from adapters.archive import pack_folder
from adapters.store import LocalAdapterStore
from tests.api_harness import ApiHarness

MB = 1024 * 1024


@pytest.fixture
def store(tmp_path, demo_assets, base_info):
    root = tmp_path / "store"
    shutil.copytree(demo_assets / "adapters" / "poet", root / "poet")
    return LocalAdapterStore(root, base=base_info, max_lora_rank=16, cache_dir=tmp_path / "cache")


@pytest.fixture
def harness(store, tmp_path, demo_assets):
    config = {"adapters": {"max_upload_bytes": 2 * MB, "max_unpacked_bytes": 4 * MB, "max_files": 8,
                           "import_roots": [str(demo_assets / "adapters"), str(tmp_path / "imports")]}}
    return ApiHarness.create(tmp_path, store.root, demo_assets / "base", config=config)


@pytest.fixture
def api(harness):
    return harness.client


def _as(tenant: str | None) -> dict:
    """Request headers acting as `tenant`'s key (None: the admin's, the client's default)."""
    return {"Authorization": f"Bearer lf-test-{tenant}-key"} if tenant else {}


@pytest.fixture
def haiku(demo_assets):
    return demo_assets / "adapters" / "haiku"


def _snapshot(store):
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if ".staging" not in p.parts)


def _upload(api, archive: bytes, name="custom", tenant=None, **fields):
    return api.post("/v1/adapters", data={"name": name, **fields}, headers=_as(tenant),
                    files={"file": ("a.tar.gz", archive, "application/gzip")})


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def _adapter_members(folder) -> list:
    return [_file(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]


def _with_config(folder, **change) -> bytes:
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(change)
    members = [m for m in _adapter_members(folder) if m[0].name != "adapter_config.json"]
    return _tar(members + [_file("adapter_config.json", json.dumps(config).encode())])


def test_upload_publishes_a_version_and_lists_it(api, store, haiku):
    response = _upload(api, pack_folder(haiku), owner="team-a", visibility="private")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["id"], body["version"], body["owner"], body["visibility"]) == ("custom@1", "1", "team-a", "private")
    assert "adapter_model.safetensors" in body["files"]
    listed = {a["id"]: a for a in api.get("/v1/adapters").json()["data"]}
    assert listed["custom"]["latest"] == "1" and listed["custom"]["servable"]
    assert listed["poet"]["source"] == "legacy"
    assert _upload(api, pack_folder(haiku)).json()["version"] == "2"
    shown = api.get("/v1/adapters/custom").json()
    assert (shown["version"], shown["versions"], shown["latest"]) == ("2", ["1", "2"], "2")
    assert api.get("/v1/adapters/custom@1").json()["version"] == "1"
    assert api.get("/v1/adapters/poet").json()["version"] == "1"


def test_archive_of_a_version_round_trips(api, haiku, tmp_path):
    _upload(api, pack_folder(haiku))
    response = api.get("/v1/adapters/custom@1/archive")
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        names = sorted(tar.getnames())
        weights = tar.extractfile("adapter_model.safetensors").read()
    assert names == sorted(p.name for p in haiku.iterdir() if p.is_file())
    assert weights == (haiku / "adapter_model.safetensors").read_bytes()


def test_a_wrapping_top_level_folder_is_accepted(api, haiku):
    members = [_file(f"haiku/{info.name}", data) for info, data in _adapter_members(haiku)]
    assert _upload(api, _tar(members)).status_code == 201


def test_an_explicit_existing_version_is_a_409(api, store, haiku, demo_assets):
    assert _upload(api, pack_folder(haiku), version="3").status_code == 201
    before = _snapshot(store)
    response = _upload(api, pack_folder(demo_assets / "adapters" / "pirate"), version="3")
    assert response.status_code == 409
    assert "custom@3" in response.json()["error"]["message"]
    assert _snapshot(store) == before


@functools.lru_cache(maxsize=1)
def _bad_cases(haiku):
    good = _adapter_members(haiku)
    bomb = _file("padding.bin.txt", b"\0" * (5 * MB))  # compresses to a few KB
    return {
        "path traversal": (_tar(good + [_file("../escape.txt", b"x")]), 400, "escapes"),
        "absolute path": (_tar(good + [_file("/etc/cron.d/x", b"x")]), 400, "absolute"),
        "symlink": (_tar(good + [_special("link", tarfile.SYMTYPE, "/etc/passwd")]), 400, "symbolic link"),
        "hardlink": (_tar(good + [_special("hard", tarfile.LNKTYPE, "adapter_config.json")]), 400, "hard link"),
        "device file": (_tar(good + [_special("dev", tarfile.CHRTYPE)]), 400, "device file"),
        "fifo": (_tar(good + [_special("pipe", tarfile.FIFOTYPE)]), 400, "FIFO"),
        "pickle weights": (_tar(good + [_file("adapter_model.bin", b"\x80\x04x")]), 400, "pickle"),
        "pickle in a sub-folder": (_tar(good + [_file("extra/model.pt", b"\x80\x04x")]), 400, "pickle"),
        "not a tar.gz": (b"this is not an archive at all", 400, "not a valid tar.gz"),
        "plain tar": (b"\0" * 1024, 400, "not a valid tar.gz"),
        "empty archive": (_tar([]), 400, "no files"),
        "no adapter_config.json": (_tar([m for m in good if m[0].name != "adapter_config.json"]), 400, "adapter_config.json"),
        "malformed adapter_config.json": (
            _tar([m for m in good if m[0].name != "adapter_config.json"] + [_file("adapter_config.json", b"{nope")]),
            400, "not valid JSON"),
        "wrong base model": (_with_config(haiku, base_model_name_or_path="meta-llama/Llama-3.1-8B"), 400, "base model"),
        "rank above the limit": (_with_config(haiku, r=64), 400, "max_lora_rank"),
        "unknown target module": (_with_config(haiku, target_modules=["q_proj", "not_a_module"]), 400, "not_a_module"),
        "lm_head target": (_with_config(haiku, target_modules=["lm_head"]), 400, "lm_head"),
        "tar bomb": (_tar(good + [bomb]), 413, "unpacks to more than"),
        "too many files": (_tar(good + [_file(f"f{i}.txt", b"x") for i in range(10)]), 413, "more than 8 files"),
        "compressed size": (_tar(good + [_file("noise.txt", os.urandom(3 * MB))]), 413, "larger than the limit"),
    }


CASES = ["path traversal", "absolute path", "symlink", "hardlink", "device file", "fifo", "pickle weights",
         "pickle in a sub-folder", "not a tar.gz", "plain tar", "empty archive", "no adapter_config.json",
         "malformed adapter_config.json", "wrong base model", "rank above the limit", "unknown target module",
         "lm_head target", "tar bomb", "too many files", "compressed size"]


@pytest.mark.parametrize("case", CASES)
def test_bad_uploads_are_refused_and_nothing_is_written(api, store, haiku, case):
    archive, status, message = _bad_cases(haiku)[case]
    before = _snapshot(store)
    response = _upload(api, archive)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"], error
    assert error["type"] == "invalid_request_error"
    assert _snapshot(store) == before
    assert [a["id"] for a in api.get("/v1/adapters").json()["data"]] == ["poet"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "lorafleet-tiny-llama"}, "base model's name"),
        ({"name": "../poet"}, "invalid adapter name"),
        ({"name": "a@b"}, "invalid adapter name"),
        ({"name": "custom", "version": "latest"}, "invalid version"),
        ({"name": "custom", "visibility": "secret"}, "invalid visibility"),
    ],
)
def test_bad_form_fields_are_refused(api, store, haiku, fields, message):
    from factory.demo_assets import BASE_NAME

    assert BASE_NAME == "lorafleet-tiny-llama"
    before = _snapshot(store)
    response = api.post("/v1/adapters", data=fields, files={"file": ("a.tar.gz", pack_folder(haiku), "application/gzip")})
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert _snapshot(store) == before


def test_missing_file_part_and_wrong_content_type(api, haiku):
    response = api.post("/v1/adapters", data={"name": "custom"})
    assert response.status_code == 400 and "file" in response.json()["error"]["message"]
    response = api.post("/v1/adapters", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 400 and "multipart" in response.json()["error"]["message"]


def test_an_admin_imports_from_an_import_root(api, haiku, tmp_path):
    response = api.post("/v1/adapters", json={"name": "imported", "uri": str(haiku)})
    assert response.status_code == 201, response.text
    assert response.json()["source"] == "import"
    (tmp_path / "imports").mkdir()
    response = api.post("/v1/adapters", json={"name": "imported", "uri": str(tmp_path / "imports" / "nowhere")})
    assert response.status_code == 400 and "nothing to import" in response.json()["error"]["message"]
    linked = tmp_path / "imports" / "linked"
    shutil.copytree(haiku, linked)
    (linked / "secret").symlink_to("/etc/passwd")
    response = api.post("/v1/adapters", json={"name": "imported", "uri": str(linked)})
    assert response.status_code == 400 and "symbolic link" in response.json()["error"]["message"]
    response = api.post("/v1/adapters", json={"name": "imported", "uri": "relative/path"})
    assert response.status_code == 400


def test_a_tenant_cannot_import_by_uri_at_all(api, haiku, store):
    """Before: any key could import any server path, e.g. another tenant's private
    version inside the store, become the copy's owner and download it."""
    before = _snapshot(store)
    response = api.post("/v1/adapters", json={"name": "stolen", "uri": str(haiku)}, headers=_as("beta"))
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "permission_denied"
    assert _snapshot(store) == before


def test_importing_from_inside_the_store_is_refused_even_for_an_admin(api, store, haiku, tmp_path):
    """The victim's published files, reached directly or through a symlink planted in an
    import root, are never a source: the path is resolved before the check."""
    assert _upload(api, pack_folder(haiku), name="victim", tenant="acme", visibility="private").status_code == 201
    files = store.root / "victim" / "1" / "files"
    (tmp_path / "imports").mkdir()
    (tmp_path / "imports" / "sneaky").symlink_to(files)
    before = _snapshot(store)
    for uri in (str(files), str(store.root / "poet"), str(tmp_path / "imports" / "sneaky")):
        response = api.post("/v1/adapters", json={"name": "copy", "uri": uri})
        assert response.status_code == 403, (uri, response.text)
        assert "import root" in response.json()["error"]["message"]
    assert _snapshot(store) == before


def test_a_refused_import_says_nothing_about_whether_a_server_path_exists(api):
    """Before: importing /etc answered with the name of a file inside it."""
    answers = []
    for uri in ("/etc", "/etc/ssl", "/no/such/folder/anywhere", "/root"):
        response = api.post("/v1/adapters", json={"name": "probe", "uri": uri})
        assert response.status_code == 403
        answers.append(response.json()["error"]["message"].replace(repr(uri), "URI"))
    assert len(set(answers)) == 1, answers


def test_delete_then_404(api, haiku):
    _upload(api, pack_folder(haiku))
    _upload(api, pack_folder(haiku))
    assert api.delete("/v1/adapters/custom@1").json() == {"deleted": ["custom@1"]}
    assert api.get("/v1/adapters/custom@1").status_code == 404
    assert api.delete("/v1/adapters/custom").json() == {"deleted": ["custom@2"]}
    response = api.get("/v1/adapters/custom")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert api.delete("/v1/adapters/custom").status_code == 404


# ---- ownership: who may publish, see and delete -----------------------------------------


def test_a_tenants_upload_is_owned_by_it_and_private_ones_are_invisible_to_others(api, haiku):
    created = _upload(api, pack_folder(haiku), name="acme-private", tenant="acme", visibility="private")
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == "acme"
    for path in ("/v1/adapters/acme-private", "/v1/adapters/acme-private/archive"):
        assert api.get(path, headers=_as("acme")).status_code == 200
        hidden = api.get(path, headers=_as("beta"))
        missing = api.get(path.replace("acme-private", "nobody-here"), headers=_as("beta"))
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["message"].replace("acme-private", "X") == missing.json()["error"]["message"].replace("nobody-here", "X")
    beta_sees = {a["id"] for a in api.get("/v1/adapters", headers=_as("beta")).json()["data"]}
    assert "acme-private" not in beta_sees and "poet" in beta_sees
    assert "acme-private" in {a["id"] for a in api.get("/v1/adapters").json()["data"]}  # admin sees all


def test_a_tenant_may_not_upload_for_another_owner_or_over_anothers_adapter(api, haiku, store):
    refused = _upload(api, pack_folder(haiku), name="mine", tenant="beta", owner="acme")
    assert refused.status_code == 403 and "own tenant" in refused.json()["error"]["message"]
    assert _upload(api, pack_folder(haiku), name="shared", tenant="acme").status_code == 201
    before = _snapshot(store)
    takeover = _upload(api, pack_folder(haiku), name="shared", tenant="beta")
    assert takeover.status_code == 403
    assert _snapshot(store) == before
    assert _upload(api, pack_folder(haiku), name="shared", tenant="acme").json()["version"] == "2"


def test_only_the_owner_or_an_admin_deletes(api, haiku):
    assert _upload(api, pack_folder(haiku), name="acme-public", tenant="acme").status_code == 201
    assert api.delete("/v1/adapters/acme-public", headers=_as("beta")).status_code == 403
    assert api.delete("/v1/adapters/poet", headers=_as("acme")).status_code == 403  # the operator's
    assert api.delete("/v1/adapters/acme-public", headers=_as("acme")).status_code == 200
    assert api.get("/v1/adapters/acme-public").status_code == 404
