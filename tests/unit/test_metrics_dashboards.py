"""The Grafana dashboards (dashboards/*.json, built by dashboards/build.py): current,
querying only metrics lorafleet defines or build.py declares as external (Ray Serve's,
vLLM's through Ray, the DCGM exporter's), with the template variables they use, and made
of PromQL that parses. tests/helm/test_helm_dashboard_queries.py evaluates every query on
synthetic series."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path


from deployments.observability import metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
VARIABLES = {"release": ".*", "model": ".*", "replica": ".*", "adapter": ".*", "tenant": ".*"}
BUILTINS = {"__rate_interval": "5m", "__range": "1h"}
METRIC_NAME = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\{")  # a name right before its selector
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
LORAFLEET_SERIES = {s.exported_name for s in metrics.ALL_METRICS} | {
    s.exported_name + suffix for s in metrics.ALL_METRICS if s.kind == "histogram" for suffix in HISTOGRAM_SUFFIXES
}


def _load():
    import importlib.util

    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def substitute(expr: str) -> str:
    """A panel query with Grafana's variables replaced (all values for ours)."""
    for name, value in {**BUILTINS, **VARIABLES}.items():
        expr = expr.replace(f"${name}", value)
    return expr


def panel_queries():
    for file, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                yield file, panel, target["expr"]


def test_dashboard_files_are_what_build_py_builds():
    assert _load().main(["--check"]) == 0, "run: python dashboards/build.py"


def external_series() -> set[str]:
    """Names build.py declares as other components' metrics (histograms with their suffixes)."""
    build = _load()
    names = {e.exported_name for e in build.EXTERNAL_METRICS}
    return names | {n + suffix for n in names for suffix in HISTOGRAM_SUFFIXES}


def test_the_six_dashboards_exist_with_their_variables():
    boards = dashboards()
    assert set(boards) == {"lorafleet-overview.json", "lorafleet-gpu.json", "lorafleet-adapters.json",
                           "lorafleet-routing.json", "lorafleet-usage.json", "lorafleet-serve.json"}
    for name, board in boards.items():
        variables = [v["name"] for v in board["templating"]["list"]]
        assert variables[:2] == ["datasource", "release"], name
        assert len({b["uid"] for b in boards.values()}) == len(boards)
    assert "tenant" in [v["name"] for v in boards["lorafleet-usage.json"]["templating"]["list"]]
    assert "adapter" in [v["name"] for v in boards["lorafleet-adapters.json"]["templating"]["list"]]
    assert "adapter" in [v["name"] for v in boards["lorafleet-overview.json"]["templating"]["list"]]


def test_every_query_uses_defined_variables_and_known_metrics_only():
    known = LORAFLEET_SERIES | external_series()
    for file, panel, expr in panel_queries():
        board = dashboards()[file]
        defined = {v["name"] for v in board["templating"]["list"]}
        used = set(re.findall(r"\$([A-Za-z_]\w*)", expr))  # not label_replace's $1
        assert used <= defined | set(BUILTINS), f"{file} {panel['title']}: undefined {used - defined - set(BUILTINS)}"
        names = set(METRIC_NAME.findall(expr)) - {"by", "on"}
        assert names and names <= known, f"{file} {panel['title']}: unknown {names - known}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_panels_are_laid_out_on_the_24_column_grid_with_unique_ids():
    for file, board in dashboards().items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), file
        for p in board["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, (file, p["title"])
            assert p["description"] and p["targets"], (file, p["title"])


def test_every_panel_query_parses_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is a test prerequisite: run `make prometheus` (apt-get install prometheus) or `make test`"
    rules = [{"record": f"lorafleet:dashboard_query_{i}", "expr": substitute(expr)}
             for i, (_, _, expr) in enumerate(panel_queries())]
    path = tmp_path / "dashboard-queries.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
