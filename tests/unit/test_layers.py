"""The architecture as a test: which package may import which.

Read from the source with `ast` (every import, also the ones inside functions), so a
lazy import cannot hide a dependency that points the wrong way. The rules are the
ones each package's docstring states; a new module falls under its folder's rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# package (folder, dotted) -> module prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "adapters": ("cluster", "deployments", "factory", "bench", "ray", "vllm", "fastapi", "starlette"),
    "cluster": ("adapters.store", "deployments", "factory", "bench", "ray", "vllm", "fastapi", "starlette", "torch"),
    "factory": ("cluster", "deployments", "bench", "ray", "vllm", "fastapi", "starlette"),
    "deployments.tenancy": ("ray", "vllm", "fastapi", "starlette", "deployments.serve", "deployments.api", "deployments.engine.vllm_engine"),
    "deployments.api": ("ray", "deployments.serve"),
    "deployments.engine": ("ray.serve", "deployments.serve", "deployments.api", "deployments.tenancy", "fastapi"),
    "deployments.observability": ("ray.serve", "deployments.serve", "deployments.api", "deployments.tenancy", "deployments.engine"),
    "deployments.errors": ("ray", "fastapi", "starlette", "vllm"),
    "deployments.config": ("ray", "fastapi", "starlette", "vllm", "deployments.serve", "deployments.api", "deployments.tenancy"),
}
# Only these may import ray.serve (the Ray Serve glue, the builder and the command that runs it).
RAY_SERVE_IMPORTERS = ("deployments.serve", "deployments.app", "deployments.cli")
PRODUCT = ("adapters", "cluster", "factory", "deployments")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules() -> list[tuple[str, Path]]:
    return sorted(
        (_module_name(p), p) for package in PRODUCT for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts
    )


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _violations(module: str, imports: set[str]) -> list[str]:
    problems = []
    for package, forbidden in FORBIDDEN.items():
        if _matches(module, package):
            problems += [f"{module} imports {name} (forbidden for {package})" for name in sorted(imports)
                         if any(_matches(name, f) for f in forbidden)]
    if not any(_matches(module, allowed) for allowed in RAY_SERVE_IMPORTERS):
        problems += [f"{module} imports {name} (only {', '.join(RAY_SERVE_IMPORTERS)} may import ray.serve)"
                     for name in sorted(imports) if _matches(name, "ray.serve")]
    return problems


def test_every_module_imports_only_what_its_layer_allows():
    problems = [p for module, path in _modules() for p in _violations(module, _imports(path))]
    assert not problems, "\n".join(problems)


def test_the_product_never_imports_the_benchmarks():
    problems = [f"{m} imports {name}" for m, path in _modules() for name in _imports(path) if _matches(name, "bench")]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", ["adapters", "cluster", "factory", "deployments", "bench", *(
    f"deployments/{sub}" for sub in ("serve", "engine", "api", "tenancy", "observability", "cli"))])
def test_each_package_opens_with_a_docstring_that_says_what_lives_there(package):
    init = REPO / package / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text()))
    assert docstring and len(docstring.split()) >= 12, f"{init} needs a docstring saying what lives there and what it may import"


def test_the_rules_catch_a_wrong_way_import():
    """The checker itself: a tenancy module importing FastAPI, a cluster module importing
    Ray, and an engine module importing ray.serve are each reported."""
    assert _violations("deployments.tenancy.keys", {"fastapi"})
    assert _violations("cluster.routing.policy", {"ray"})
    assert _violations("deployments.engine.vllm_engine", {"ray.serve.handle"})
    assert _violations("adapters.store", {"factory.demo_assets"})
    assert not _violations("deployments.serve.ingress", {"ray.serve", "fastapi"})
