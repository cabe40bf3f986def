"""Shared fixtures: demo assets built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_ASSETS = REPO / ".test-assets"

for key, value in {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def demo_assets() -> Path:
    """The embedded demo model and adapters (trained by the factory). Cached across sessions
    by recipe digest (factory/demo_assets.py): a cold build trains for ~3-4 min on 2 cores,
    a warm one is a file read."""
    from factory.demo_assets import build_demo_assets

    return build_demo_assets(TEST_ASSETS / "demo")


@pytest.fixture(scope="session")
def base_info(demo_assets):
    from factory.demo_assets import BASE_NAME
    from adapters.validation import base_model_info

    return base_model_info(str(demo_assets / "base"), BASE_NAME)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1, once per
    session; yields its endpoint URL. Credentials are dummies set in the environment,
    where boto3 (and every process the tests start) finds them."""
    from moto.server import ThreadedMotoServer

    dummy = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in dummy}
    os.environ.update(dummy)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the session's S3 server; yields (endpoint, bucket)."""
    import re
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    bucket = f"t-{re.sub('[^a-z0-9]', '-', request.node.name.lower())[:40]}-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    return s3_server, bucket


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL on 127.0.0.1 for the session (tests/postgres_server.py): Debian's
    binaries, a throwaway cluster. Missing PostgreSQL fails with how to install it."""
    from tests.postgres_server import PostgresMissing, PostgresServer

    try:
        server = PostgresServer.start()
    except PostgresMissing as err:
        pytest.fail(str(err))
    yield server
    server.destroy()


@pytest.fixture
def postgres_dsn(postgres_server, request) -> str:
    """A fresh, empty database on the session's server; its DSN."""
    import re
    import uuid

    name = f"t_{re.sub('[^a-z0-9]', '_', request.node.name.lower())[:40]}_{uuid.uuid4().hex[:6]}"
    return postgres_server.create_database(name)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The demo base's shape with random (untrained) weights: for factory tests that
    need a real base model in a second, not the pretrained demo."""
    from factory.demo_assets import build_base_model, build_tokenizer

    base = tmp_path_factory.mktemp("tiny") / "base"
    base.mkdir()
    build_tokenizer(base)
    build_base_model(base)
    return base


def pytest_sessionfinish(session, exitstatus):
    """No silent skips: a skipped test fails the run. A missing prerequisite is a failure
    that says what to install (the Makefile installs every one), never a quiet gap."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        reporter.write_line(f"{len(skipped)} test(s) skipped: lorafleet's suite does not skip (see tests/conftest.py)",
                            red=True)
        session.exitstatus = 1


def pytest_collection_modifyitems(items):
    """Within each test folder, tests that disturb its shared fleet run last: those that
    kill part of it (`fleet_disruptive`), then the one that stops it (`fleet_shutdown`).
    Folders keep their order, so one tier's fleet is down before the next tier's starts."""
    folders: dict = {}

    def rank(item):
        folder = folders.setdefault(item.path.parent, len(folders))
        disturbs = 2 if item.get_closest_marker("fleet_shutdown") else 1 if item.get_closest_marker("fleet_disruptive") else 0
        return folder, disturbs

    items.sort(key=rank)
