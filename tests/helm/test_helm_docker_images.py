"""The images the chart runs: built by docker/Dockerfile.{gpu,cpu} from the project's own
pins. Docker cannot build here, so these check the Dockerfiles agree with pyproject.toml
and with the chart's defaults."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from tests.helm.rendering import CHART, REPO, render_chart

DOCKER = REPO / "docker"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _ray_pin() -> str:
    (pin,) = [d for d in PYPROJECT["project"]["dependencies"] if d.replace(" ", "").startswith("ray[")]
    return re.search(r"==\s*([0-9.]+)", pin).group(1)


def _instructions(path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _base_image(path) -> str:
    args = dict(a.split("=", 1) for kind, a in _instructions(path) if kind == "ARG" and "=" in a)
    (base,) = [a for kind, a in _instructions(path) if kind == "FROM"]
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)


@pytest.mark.parametrize("flavour", ["gpu", "cpu"])
def test_image_builds_on_the_ray_image_the_project_pins(flavour):
    assert _base_image(DOCKER / f"Dockerfile.{flavour}") == f"rayproject/ray:{_ray_pin()}-py311-{flavour}"


@pytest.mark.parametrize("flavour", ["gpu", "cpu"])
def test_image_installs_the_project_with_its_engine_extra(flavour):
    runs = " ".join(a for kind, a in _instructions(DOCKER / f"Dockerfile.{flavour}") if kind == "RUN")
    assert re.search(rf"pip install [^&]*\"/tmp/lorafleet-src\[{flavour}\]\"", runs)
    assert flavour in PYPROJECT["project"]["optional-dependencies"]
    assert "pip install -e" not in runs  # Ray workers import the installed package


def test_cpu_image_removes_the_cuda_torch_companions_like_the_makefile():
    runs = " ".join(a for kind, a in _instructions(DOCKER / "Dockerfile.cpu") if kind == "RUN")
    uninstall = re.search(r"pip uninstall -y ([\w ]+)", runs)
    assert uninstall and set(uninstall.group(1).split()) == {"torchvision", "torchaudio", "torchcodec"}
    assert runs.index("pip install") < runs.index("pip uninstall")


@pytest.mark.parametrize("flavour", ["gpu", "cpu"])
def test_build_context_keeps_every_package_pip_installs(flavour):
    ignore = (DOCKER / f"Dockerfile.{flavour}.dockerignore").read_text().splitlines()
    assert "*" in ignore
    for package in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert f"!{package.rstrip('*')}/" in ignore
    assert "!pyproject.toml" in ignore


def test_chart_defaults_run_the_gpu_image_of_this_version():
    # The tag is left empty in values.yaml and defaults to the chart's appVersion, so a
    # release bump (Chart.yaml) cannot leave an old image behind.
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    version = PYPROJECT["project"]["version"]
    assert chart["appVersion"] == version
    assert values["image"]["tag"] == ""
    image = render_chart().head_group["template"]["spec"]["containers"][0]["image"]
    assert image == f"{values['image']['repository']}:{version}-gpu"
    assert values["ray"]["version"] == _ray_pin()
    gpu_file = (DOCKER / "Dockerfile.gpu").read_text()
    assert image in gpu_file
