"""`helm lint --strict` and documentation of every value."""

from __future__ import annotations

import helm_python as helm
import pytest
import yaml

from tests.helm.rendering import CHART, CI_VALUES, load_sync_tool

WARNING = 2  # helm lint severities: 1 info, 2 warning, 3 error


def _problems(report: dict) -> list[str]:
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= WARNING] + report["errors"]


@pytest.mark.parametrize("kube_version", [None, "v1.30.0"], ids=["newest", "k8s-1.30"])
def test_strict_lint_passes_with_the_default_values(kube_version):
    report = helm.lint(CHART, strict=True, kube_version=kube_version)
    assert report["total_charts_linted"] == 1
    assert _problems(report) == []


@pytest.mark.parametrize("path", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_strict_lint_passes_with_each_ci_values_file(path):
    report = helm.lint(CHART, yaml.safe_load(path.read_text()), strict=True)
    assert _problems(report) == []


def test_ci_folder_has_the_values_files_the_issue_names():
    names = {p.name for p in CI_VALUES}
    assert {"default-values.yaml", "s3-values.yaml", "autoscaling-values.yaml", "pvc-values.yaml",
            "production-values.yaml"} <= names


def test_strict_lint_fails_when_values_break_the_schema():
    # The lint must be able to fail. (Helm 4 lints in "lint mode", where the templates'
    # `fail` checks only log: those are proven by rendering, in test_helm_values_schema.)
    report = helm.lint(CHART, {"workerGroups": [{"name": "gpu", "gpus": "one"}]}, strict=True)
    problems = "\n".join(_problems(report))
    assert "/workerGroups/0/gpus" in problems and "want integer" in problems


def test_every_value_in_values_yaml_has_a_helm_docs_comment():
    docs = load_sync_tool().value_docs((CHART / "values.yaml").read_text())
    assert len(docs) > 50, "the values parser found too few values"
    undocumented = [f"values.yaml:{d.line} {d.path}" for d in docs if not d.description]
    assert undocumented == []


def test_every_worker_group_field_the_schema_accepts_is_documented_in_values_yaml():
    tool = load_sync_tool()
    documented = {d.path.removeprefix("workerGroups[0].") for d in tool.value_docs((CHART / "values.yaml").read_text())
                  if d.path.startswith("workerGroups[0].")}
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    accepted = set(schema["properties"]["workerGroups"]["items"]["properties"])
    assert documented == accepted


def test_values_yaml_lists_every_field_of_the_lorafleet_config_schema():
    from deployments.config import LorafleetConfig

    from deployments.config import PER_BASE_SECTIONS, ModelConfig

    values = yaml.safe_load((CHART / "values.yaml").read_text())["lorafleet"]
    for section, model in LorafleetConfig.model_fields.items():
        if section == "models":  # the chart's default is one base, in the single `model:` form, without overrides
            section, wanted = "model", set(ModelConfig.model_fields) - set(PER_BASE_SECTIONS)
        else:
            wanted = set(model.annotation.model_fields)
        assert section in values, f"values.yaml lorafleet.{section} is missing"
        assert set(values[section]) == wanted, (
            f"values.yaml lorafleet.{section} must list exactly the fields of deployments/config.py "
            f"(missing {sorted(wanted - set(values[section]))}, unknown {sorted(set(values[section]) - wanted)})"
        )


def test_derived_chart_files_are_in_sync_with_the_project():
    # values.schema.json's lorafleet schema, dashboards/ copies and the README values table.
    assert load_sync_tool().main(["--check"]) == 0, "run: python helm/tools/sync_chart.py"


def test_values_table_parser_reports_an_undocumented_value():
    docs = load_sync_tool().value_docs("section:\n  # -- documented\n  a: 1\n  b: 2\n")
    assert {d.path: d.description for d in docs} == {"section.a": "documented", "section.b": None}


def test_sync_tool_copies_new_dashboards_into_the_chart_and_drops_deleted_ones(tmp_path, chart_copy, monkeypatch):
    tool = load_sync_tool()
    repo = tmp_path
    (repo / "dashboards").mkdir()
    (repo / "dashboards" / "fleet.json").write_text('{"title": "fleet"}')
    (chart_copy / "dashboards" / "stale.json").write_text("{}")
    for name, value in {"REPO": repo, "CHART": chart_copy, "SCHEMA_FILE": chart_copy / "values.schema.json",
                        "VALUES_FILE": chart_copy / "values.yaml", "README_FILE": chart_copy / "README.md"}.items():
        monkeypatch.setattr(tool, name, value)

    assert tool.main(["--check"]) == 1
    assert tool.main([]) == 0
    assert tool.main(["--check"]) == 0
    assert sorted(p.name for p in (chart_copy / "dashboards").glob("*.json")) == ["fleet.json"]
    assert (chart_copy / "dashboards" / "README.md").exists()
