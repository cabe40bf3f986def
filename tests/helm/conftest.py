"""Offline proof of the Helm chart: no cluster, no `helm` binary, no Ray cluster.

The chart is linted and rendered through helm-python-sdk, the rendered objects are
validated against Kubernetes' and KubeRay's schemas, and the RayService's serveConfigV2
is fed to the project's own config schema and app builder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import ray
from ray._private import auto_init_hook

from tests.helm.admission import apply_defaults, drop_nulls, reject_unknown_fields
from tests.helm.rendering import CHART, KUBERAY_DIR, VALUE_SETS, render_chart


@pytest.fixture
def render():
    return render_chart


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """A scratch copy of the chart, for tests that change its files (dashboards)."""
    target = tmp_path / CHART.name
    shutil.copytree(CHART, target)
    return target


@pytest.fixture(params=list(VALUE_SETS), ids=list(VALUE_SETS))
def value_set(request) -> tuple[str, dict[str, Any]]:
    return request.param, VALUE_SETS[request.param]


@pytest.fixture(scope="session")
def rayservice_schema() -> dict:
    return json.loads((KUBERAY_DIR / "rayservice.schema.json").read_text())


@pytest.fixture(scope="session")
def validate_rayservice(rayservice_schema):
    """Validate a RayService the way the API server admits it: drop nulls, apply the
    CRD's defaults, then check the schema (unknown fields rejected). Returns the
    defaulted object; raises jsonschema.ValidationError naming the path."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(rayservice_schema)
    strict = reject_unknown_fields(rayservice_schema)
    validator_cls.check_schema(strict)
    validator = validator_cls(strict)

    def validate(obj: dict) -> dict:
        admitted = apply_defaults(rayservice_schema, drop_nulls(obj))
        errors = sorted(validator.iter_errors(admitted), key=lambda e: list(e.absolute_path))
        if errors:
            raise errors[0]
        return admitted

    return validate


@pytest.fixture
def no_ray_auto_connect(monkeypatch):
    monkeypatch.setattr(auto_init_hook, "enable_auto_connect", False)
    was_initialized = ray.is_initialized()
    yield
    assert ray.is_initialized() == was_initialized, "building the application started or joined Ray"
