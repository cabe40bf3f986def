"""A base model given as a hub id is fetched by huggingface_hub's `snapshot_download` into
`<cache>/hub`, here from a stand-in for the Hugging Face Hub on 127.0.0.1 written below
(only the endpoints the installed huggingface_hub calls): every safetensors and small file
arrives, never a pickle or an `original/` checkpoint; HF_TOKEN is sent; a private, wrong
or unreachable repo fails naming it. Nothing reaches huggingface.co."""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import re
import socket
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from deployments.config import ModelConfig
from deployments.errors import ModelUnavailable
from deployments.model_files import local_model_path

COMMIT = "1f0e2d3c4b5a69788796a5b4c3d2e1f001234567"
TOKEN = "hf_lorafleet_test_token"

# What a node needs to serve the model, and what it must never fetch.
WANTED = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"}
NEVER = {"pytorch_model.bin", "original/consolidated.pth", "original/params.json", ".gitattributes"}
SMALL = WANTED - {"model.safetensors"}


@dataclass
class FakeRepo:
    """A hub model repo served from a local folder; `token`: private, answered 401 to any
    request without `Authorization: Bearer <token>` (as the Hub answers a private repo)."""

    folder: Path
    token: str | None = None

    def files(self) -> dict[str, Path]:
        return {p.relative_to(self.folder).as_posix(): p for p in sorted(self.folder.rglob("*")) if p.is_file()}


class FakeHub(ThreadingHTTPServer):
    """The Hub API as huggingface_hub 2.x's `snapshot_download` uses it, and a record of
    every request (method, path, headers) so tests can say what was and was not fetched:

    - `GET /api/models/{repo}/revision/{rev}`: the repo's info; `sha` is its commit;
    - `GET /api/models/{repo}/tree/{commit}?recursive=...`: its files (path, size, oid);
    - `HEAD /{repo}/resolve/{commit}/{path}`: X-Repo-Commit, ETag, Content-Length (the
      download is keyed by them), then `GET` of the same URL: the bytes.

    An unknown repo is a 404 with `X-Error-Code: RepoNotFound`, as on the Hub."""

    daemon_threads = True

    def __init__(self, repos: dict[str, FakeRepo]):
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.repos = repos
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((method, path, headers))

    def file_requests(self, method: str, since: int = 0) -> list[str]:
        """The repo files asked for with `method` on /resolve/, in order (repeats kept)."""
        with self._lock:
            requests = self.requests[since:]
        return [m["path"] for verb, path, _ in requests if verb == method and (m := _RESOLVE.match(path))]


_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree)/(?P<rev>[^/]+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class _HubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def do_GET(self):
        self._answer(body=True)

    def do_HEAD(self):
        self._answer(body=False)

    def log_message(self, *args):
        pass

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.record(self.command, path, {k.lower(): v for k, v in self.headers.items()})
        api, resolve = _API.match(path), _RESOLVE.match(path)
        match = api or resolve
        repo = self.server.repos.get(match["repo"]) if match else None
        if repo is None:
            return self._send(404, {"error": "Repository not found"}, body, {"X-Error-Code": "RepoNotFound"})
        if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
            return self._send(401, {"error": "Invalid username or password."}, body, {"X-Error-Code": "RepoNotFound"})
        if match["rev"] not in ("main", COMMIT):
            return self._send(404, {"error": "Invalid rev id"}, body, {"X-Error-Code": "RevisionNotFound"})
        files = repo.files()
        if api and api["kind"] == "revision":
            return self._send(200, {"id": match["repo"], "sha": COMMIT, "private": bool(repo.token),
                                    "siblings": [{"rfilename": name} for name in files]}, body)
        if api:  # the tree, recursive: folders and files
            folders = sorted({name.rsplit("/", 1)[0] for name in files if "/" in name})
            return self._send(200, [{"type": "directory", "path": f, "oid": _oid(f.encode()), "size": 0} for f in folders]
                              + [{"type": "file", "path": name, "size": p.stat().st_size, "oid": _oid(p.read_bytes())}
                                 for name, p in files.items()], body)
        if resolve["path"] not in files:
            return self._send(404, {"error": "Entry not found"}, body,
                              {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        content = files[resolve["path"]].read_bytes()
        self._send(200, content, body, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                                        "Content-Type": "application/octet-stream"})

    def _send(self, status: int, payload, body: bool, headers: dict[str, str] | None = None) -> None:
        content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            self.wfile.write(content)


def _oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


@contextmanager
def _serving(repos: dict[str, FakeRepo]):
    hub = FakeHub(repos)
    thread = threading.Thread(target=hub.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.shutdown()
        hub.server_close()
        thread.join()


def _write_model(folder: Path, *, safetensors: bool = True) -> Path:
    """A tiny Llama-shaped repo as found on the Hub: what a node needs, plus a pickled
    checkpoint, Meta's `original/` checkpoint and `.gitattributes`, which it must skip."""
    from safetensors.numpy import save_file

    (folder / "original").mkdir(parents=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
              "intermediate_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 32}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    if safetensors:
        rng = np.random.default_rng(0)
        save_file({"model.embed_tokens.weight": rng.standard_normal((32, 8), dtype=np.float32),
                   "lm_head.weight": rng.standard_normal((32, 8), dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"never": "unpickled"}))
    (folder / "original" / "consolidated.pth").write_bytes(pickle.dumps({"never": "fetched"}))
    (folder / "original" / "params.json").write_text(json.dumps({"dim": 8}))
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    return folder


@pytest.fixture
def hub_at(monkeypatch, tmp_path):
    """Points huggingface_hub at an endpoint, in this process.

    huggingface_hub reads HF_ENDPOINT (and HF_HOME, the token file, HF_HUB_OFFLINE, the
    timeouts) once, into `huggingface_hub.constants`, when first imported, and the
    endpoint is then read from there in several places (`HfApi.endpoint`,
    `HUGGINGFACE_CO_URL_TEMPLATE` for the /resolve/ URLs, `HF_URL_HOSTS` for redirects).
    Setting the variables alone does nothing once it is imported (any earlier test
    importing transformers does), and patching a chosen constant or two breaks silently
    when a release derives one more. So the environment is set and the constants module
    is re-executed (`importlib.reload`), which derives every value exactly as an import
    with that environment would; the callers read them as `constants.X` at call time.
    HF_HOME in tmp_path: no token file of this machine is sent. Afterwards the module's
    namespace is restored as it was. A guard checks both URL builders snapshot_download
    uses point at the endpoint, so a release that reads it elsewhere fails here instead
    of reaching huggingface.co. (A subprocess with the env set would be as faithful, but
    costs an interpreter start per fetch and hides the exception's type.)"""
    from huggingface_hub import constants

    saved = dict(vars(constants))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HUGGINGFACE_CO_STAGING", raising=False)

    def point(endpoint: str) -> None:
        for name, value in {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
                            "HF_HUB_ETAG_TIMEOUT": "3", "HF_HUB_DOWNLOAD_TIMEOUT": "3",
                            "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        importlib.reload(constants)
        from huggingface_hub import HfApi, hf_hub_url

        assert HfApi().endpoint == endpoint
        assert hf_hub_url("acme/x", "config.json").startswith(endpoint + "/")

    yield point
    namespace = vars(constants)
    for name in set(namespace) - set(saved):
        del namespace[name]
    namespace.update(saved)


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    return _write_model(tmp_path / "repos" / "tiny-llama")


@pytest.fixture
def hub(hub_at, tiny_repo, tmp_path):
    """The fake hub with a public `acme/tiny-llama`, a private copy of it, and a repo
    without safetensors weights; huggingface_hub pointed at it."""
    repos = {"acme/tiny-llama": FakeRepo(tiny_repo),
             "acme/private-llama": FakeRepo(tiny_repo, token=TOKEN),
             "acme/pickle-only": FakeRepo(_write_model(tmp_path / "repos" / "pickle-only", safetensors=False))}
    with _serving(repos) as server:
        hub_at(server.url)
        yield server


def _model(repo_id: str) -> ModelConfig:
    return ModelConfig(source=repo_id, served_name="tiny")


def _names(repo_id: str) -> str:
    """lorafleet's own message naming the source (the hub's errors name only a URL, or nothing)."""
    return re.escape(f"cannot fetch the base model {repo_id!r} from the hub")


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_a_hub_base_is_copied_once_with_every_safetensors_and_config_file_and_no_pickle(hub, tiny_repo, tmp_path):
    """The copy vLLM loads: under the configured cache, byte for byte what the hub holds,
    without the pickles lorafleet never loads; every replica after the first on the node
    reuses it (no file is asked for again)."""
    folder = Path(local_model_path(_model("acme/tiny-llama"), tmp_path / "cache"))
    assert folder.is_relative_to((tmp_path / "cache").resolve())
    assert _files(folder) == WANTED
    for name in WANTED:
        assert (folder / name).read_bytes() == (tiny_repo / name).read_bytes(), name
    assert Counter(hub.file_requests("GET")) == Counter(WANTED)  # each downloaded once, nothing else
    assert not NEVER & set(hub.file_requests("HEAD"))  # the skipped files were never even asked about

    before = len(hub.requests)
    assert local_model_path(_model("acme/tiny-llama"), tmp_path / "cache") == str(folder)  # another replica
    assert hub.file_requests("GET", since=before) == [] and hub.file_requests("HEAD", since=before) == []


def test_hf_token_from_the_environment_is_sent_as_a_bearer_token(hub, monkeypatch, tmp_path):
    """A private or gated base (Llama) needs the token the Helm chart puts in HF_TOKEN,
    on the API calls and on every file download."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = Path(local_model_path(_model("acme/private-llama"), tmp_path / "cache"))
    assert _files(folder) == WANTED
    assert hub.requests and {headers.get("authorization") for _, _, headers in hub.requests} == {f"Bearer {TOKEN}"}


def test_a_private_repo_without_the_token_fails_naming_it(hub, tmp_path):
    with pytest.raises(ModelUnavailable, match=_names("acme/private-llama")):
        local_model_path(_model("acme/private-llama"), tmp_path / "cache")
    assert hub.requests and hub.file_requests("GET") == []


def test_an_unknown_repo_fails_naming_it(hub, tmp_path):
    """A typo in `model.source` fails the replica's start with the id it tried."""
    with pytest.raises(ModelUnavailable, match=_names("acme/no-such-model")):
        local_model_path(_model("acme/no-such-model"), tmp_path / "cache")


def test_an_unreachable_hub_fails_naming_the_repo_without_waiting(hub_at, tmp_path):
    """A closed port (the hub host is down, or HF_ENDPOINT is wrong): the replica's start
    fails within seconds, not after retries."""
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hub_at(f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match=_names("acme/tiny-llama")):
        local_model_path(_model("acme/tiny-llama"), tmp_path / "cache")
    assert time.monotonic() - started < 5


def test_a_hub_repo_without_safetensors_weights_is_refused(hub, tmp_path):
    """Only its pickled checkpoint holds the weights: lorafleet never unpickles, so it is
    refused (and the pickle never downloaded)."""
    with pytest.raises(ModelUnavailable, match="acme/pickle-only has no safetensors weights"):
        local_model_path(_model("acme/pickle-only"), tmp_path / "cache")
    assert "pytorch_model.bin" not in hub.file_requests("GET") + hub.file_requests("HEAD")


def test_the_ingress_fetches_only_what_a_tokenizer_reads(hub, tmp_path):
    """The ingress (`weights=False`) runs on nodes without an engine: no weights for it."""
    folder = Path(local_model_path(_model("acme/tiny-llama"), tmp_path / "cache", weights=False))
    assert _files(folder) == SMALL
    assert Counter(hub.file_requests("GET")) == Counter(SMALL)
    assert "model.safetensors" not in hub.file_requests("HEAD")


@contextmanager
def _silent_hub():
    """A hub host that accepts connections (the kernel completes them into the listen
    backlog) and never answers: a hung proxy or load balancer."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_hub_that_never_answers_fails_the_start_naming_the_repo_within_the_bound(hub_at, tmp_path, monkeypatch):
    """huggingface_hub sends its first request without a timeout; lorafleet bounds it
    (model_files.HUB_ANSWER_TIMEOUT_S, 1 s here) instead of hanging the replica's start."""
    monkeypatch.setattr("deployments.model_files.HUB_ANSWER_TIMEOUT_S", 1.0)
    with _silent_hub() as endpoint:
        hub_at(endpoint)
        started = time.monotonic()
        with pytest.raises(ModelUnavailable, match=_names("acme/tiny-llama")) as err:
            local_model_path(_model("acme/tiny-llama"), tmp_path / "cache")
    assert time.monotonic() - started < 10
    assert "within 1 s" in str(err.value)


def test_a_copy_fetched_earlier_still_serves_while_the_hub_does_not_answer(hub, hub_at, tmp_path, monkeypatch):
    """Bounding the hub's answer must not lose huggingface_hub's offline behaviour: a
    complete snapshot in the node's cache is used when the hub is silent."""
    first = local_model_path(_model("acme/tiny-llama"), tmp_path / "cache")
    monkeypatch.setattr("deployments.model_files.HUB_ANSWER_TIMEOUT_S", 1.0)
    with _silent_hub() as endpoint:
        hub_at(endpoint)
        assert local_model_path(_model("acme/tiny-llama"), tmp_path / "cache") == first
