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
    by recipe digest (adapters/demo.py): a cold build trains for ~3-4 min on 2 cores,
    a warm one is a file read."""
    from adapters.demo import build_demo_assets

    return build_demo_assets(TEST_ASSETS / "demo")


@pytest.fixture(scope="session")
def base_info(demo_assets):
    from adapters.demo import BASE_NAME
    from adapters.validation import base_model_info

    return base_model_info(str(demo_assets / "base"), BASE_NAME)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The demo base's shape with random (untrained) weights: for factory tests that
    need a real base model in a second, not the pretrained demo."""
    from adapters.demo import build_base_model, build_tokenizer

    base = tmp_path_factory.mktemp("tiny") / "base"
    base.mkdir()
    build_tokenizer(base)
    build_base_model(base)
    return base
