"""Keep the Helm chart in step with the project it installs.

    python helm/tools/sync_chart.py          # rewrite what is out of date
    python helm/tools/sync_chart.py --check  # exit 1 and say what is out of date

Three things in `helm/lorafleet/` are derived, two of them copies because a chart can
only read files inside its own folder:

- `values.schema.json`: generated whole. `$defs.LorafleetConfig` (and the models it
  references) is the JSON schema of `deployments.config.LorafleetConfig`, so `helm install`
  rejects the same unknown or mistyped `lorafleet:` fields that `lorafleet serve` would;
  the chart's own values come from `values_schema.py` (Kubernetes-typed values cut out of
  KubeRay's RayService CRD schema, `KUBERAY_SCHEMA`), described by values.yaml's comments.
- `dashboards/*.json`: the Grafana dashboards of the repository's `dashboards/` folder,
  shipped as ConfigMaps.
- README.md's values table, between its `values-table` markers: built from values.yaml's
  `# --` comments (the helm-docs convention), so the table and the defaults never disagree;
  and its production example, between the `production-values` markers: a copy of
  ci/production-values.yaml, which the tests render and validate.

tests/helm checks all three are current, so a new config field, dashboard or value cannot
be forgotten by the chart.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(__file__).resolve().parent
CHART = REPO / "helm" / "lorafleet"
# KubeRay's RayService CRD (v1.7.0) as plain JSON Schema. Not vendored yet: a checkout has
# the project's shared/ folder beside it (CI copies it there too).
KUBERAY_SCHEMA = REPO / "tests" / "helm" / "kuberay" / "rayservice.schema.json"  # vendored: see its README.md
SCHEMA_FILE = CHART / "values.schema.json"
VALUES_FILE = CHART / "values.yaml"
README_FILE = CHART / "README.md"
TABLE_BEGIN = "<!-- values-table:begin (python helm/tools/sync_chart.py) -->"
TABLE_END = "<!-- values-table:end -->"
PRODUCTION_FILE = CHART / "ci" / "production-values.yaml"
PRODUCTION_BEGIN = "<!-- production-values:begin (python helm/tools/sync_chart.py) -->"
PRODUCTION_END = "<!-- production-values:end -->"
ROOT_DEF = "LorafleetConfig"


def config_schema_defs() -> dict[str, dict]:
    """`$defs` entries for the lorafleet config: the root model under ROOT_DEF, plus the
    nested models pydantic emits (their `$ref`s already point at `#/$defs/<Model>`)."""
    sys.path.insert(0, str(REPO))
    from deployments.config import LorafleetConfig

    schema = LorafleetConfig.model_json_schema()
    defs = schema.pop("$defs", {})
    return {**defs, ROOT_DEF: schema}


def _values_schema_module():
    """values_schema.py beside this script (loaded by path: helm/tools is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lorafleet_values_schema", TOOLS / "values_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def values_schema(values_text: str) -> dict:
    """The whole values.schema.json: the chart's values, the lorafleet config's schema, and
    values.yaml's `# --` comments as descriptions of the chart's values."""
    module = _values_schema_module()
    if not KUBERAY_SCHEMA.is_file():
        raise SystemExit(f"KubeRay's RayService schema is missing: {KUBERAY_SCHEMA}")
    kube = module.KubeTypes(json.loads(KUBERAY_SCHEMA.read_text()))
    properties, required, chart_defs = module.values_schema(kube)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "lorafleet chart values",
        "type": "object",
        "additionalProperties": False,
        "required": ["lorafleet", *required],
        "properties": {"lorafleet": {"$ref": f"#/$defs/{ROOT_DEF}"}, **properties},
        "$defs": dict(sorted({**chart_defs, **config_schema_defs()}.items())),
    }
    for doc in value_docs(values_text):
        if doc.description and not doc.path.startswith("lorafleet."):
            node = schema_node(schema, doc.path)
            if node is None:
                raise SystemExit(f"values.yaml documents {doc.path}, which values_schema.py does not describe")
            node["description"] = doc.description
    return schema


def schema_node(schema: dict, path: str) -> dict | None:
    """The schema object describing `path` (a `$ref` node itself, not its target)."""
    node = schema
    for part in path.split("."):
        while "$ref" in node and "properties" not in node:
            target = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
            if "properties" not in target:
                break
            node = target
        key, item = (part[:-3], True) if part.endswith("[0]") else (part, False)
        node = node.get("properties", {}).get(key)
        if node is None:
            return None
        if item:
            node = node.get("items")
            if node is None:
                return None
    return node


def dashboard_sources() -> dict[str, bytes]:
    """The repository's Grafana dashboards by file name (empty when there are none yet)."""
    folder = REPO / "dashboards"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def chart_dashboards() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((CHART / "dashboards").glob("*.json"))}


@dataclass(frozen=True)
class ValueDoc:
    """One documented value of values.yaml."""

    path: str
    line: int  # 1-based line of the key
    default: object
    description: str | None  # the `# --` comment, None when missing


def value_docs(text: str) -> list[ValueDoc]:
    """Every value of values.yaml with its `# --` comment.

    A key whose value is a block mapping with documented keys (at any depth) is a section: its keys are
    walked. Every other key (a scalar, a list, a mapping such as `resources` documented
    as a whole) is a value and must carry a `# --` comment right above it (continued by
    further `#` lines). Lists are values
    as a whole; a list of objects may also document its first item's keys, which then
    appear as `path[0].key`.
    """
    lines = text.splitlines()
    docs: list[ValueDoc] = []

    def comment_above(line_index: int) -> str | None:
        block: list[str] = []
        i = line_index - 1
        while i >= 0:
            stripped = lines[i].strip()
            if stripped.startswith("- #"):  # `- # -- doc` opening a list item
                stripped = stripped[1:].strip()
            if not stripped.startswith("#"):
                break
            block.insert(0, stripped.lstrip("#").strip())
            i -= 1
        for n, entry in enumerate(block):
            if entry.startswith("-- "):
                return " ".join([entry[3:], *block[n + 1 :]]).strip()
        return None

    def documents_keys(node: yaml.MappingNode) -> bool:
        return any(
            comment_above(k.start_mark.line) is not None or (isinstance(v, yaml.MappingNode) and documents_keys(v))
            for k, v in node.value
        )

    def walk(node: yaml.Node, prefix: str) -> None:
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else key_node.value
            is_section = isinstance(value_node, yaml.MappingNode) and not value_node.flow_style and documents_keys(value_node)
            if is_section:
                walk(value_node, path)
                continue
            default = yaml.safe_load(yaml.serialize(value_node))
            docs.append(ValueDoc(path, key_node.start_mark.line + 1, default, comment_above(key_node.start_mark.line)))
            # A list of objects (e.g. workerGroups) may document its first item's fields.
            if isinstance(value_node, yaml.SequenceNode) and value_node.value and isinstance(value_node.value[0], yaml.MappingNode):
                for item_key, item_value in value_node.value[0].value:
                    doc = comment_above(item_key.start_mark.line)
                    if doc is not None:
                        item_default = yaml.safe_load(yaml.serialize(item_value))
                        docs.append(ValueDoc(f"{path}[0].{item_key.value}", item_key.start_mark.line + 1, item_default, doc))

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return docs


def schema_at(schema: dict, path: str) -> dict:
    """The values.schema.json node describing `path` ({} when the schema does not say)."""
    node = schema
    for part in path.split("."):
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
        if part.endswith("[0]"):
            node = node.get("properties", {}).get(part[:-3], {}).get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


_JSON_TYPES = {"boolean": "bool", "integer": "int", "number": "float", "string": "string", "array": "list", "object": "object"}


def _type_name(schema_node: dict, value: object) -> str:
    if schema_node.get("type") in _JSON_TYPES:
        return _JSON_TYPES[schema_node["type"]]
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(type(value), "string")


def values_table(text: str) -> str:
    schema = json.loads(SCHEMA_FILE.read_text())
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for doc in value_docs(text):
        default = json.dumps(doc.default, separators=(", ", ": "))
        description = (doc.description or "").replace("|", "\\|")
        rows.append(f"| `{doc.path}` | {_type_name(schema_at(schema, doc.path), doc.default)} | `{default}` | {description} |")
    return "\n".join(rows)


def _between(text: str, begin: str, end: str, content: str) -> str:
    head, sep, rest = text.partition(begin)
    _, sep2, tail = rest.partition(end)
    if not (sep and sep2):
        raise SystemExit(f"{README_FILE}: the {begin} / {end} markers are missing")
    return f"{head}{begin}\n{content}\n{end}{tail}"


def synced_readme(readme: str, values_text: str) -> str:
    readme = _between(readme, TABLE_BEGIN, TABLE_END, values_table(values_text))
    if PRODUCTION_BEGIN in readme:
        production = PRODUCTION_FILE.read_text() if PRODUCTION_FILE.is_file() else ""
        readme = _between(readme, PRODUCTION_BEGIN, PRODUCTION_END, f"```yaml\n{production}```")
    return readme


def render_schema(schema: dict) -> str:
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report drift instead of fixing it")
    args = parser.parse_args(argv)

    current_text = SCHEMA_FILE.read_text()
    wanted_text = render_schema(values_schema(VALUES_FILE.read_text()))
    sources, copies = dashboard_sources(), chart_dashboards()
    problems = []
    if wanted_text != current_text:
        problems.append(f"{SCHEMA_FILE.relative_to(REPO)}: differs from deployments/config.py, values_schema.py and values.yaml")
    if sources != copies:
        problems.append(f"{(CHART / 'dashboards').relative_to(REPO)}: differs from dashboards/")
    readme_text = README_FILE.read_text()
    wanted_readme = synced_readme(readme_text, VALUES_FILE.read_text())
    if wanted_readme != readme_text:
        problems.append(f"{README_FILE.relative_to(REPO)}: values table or production example differs from values.yaml / ci/")
    if args.check:
        for line in problems:
            print(f"out of date: {line} (run python helm/tools/sync_chart.py)", file=sys.stderr)
        return 1 if problems else 0

    SCHEMA_FILE.write_text(wanted_text)
    README_FILE.write_text(wanted_readme)
    for name in copies.keys() - sources.keys():
        (CHART / "dashboards" / name).unlink()
    for name, data in sources.items():
        (CHART / "dashboards" / name).write_bytes(data)
    for line in problems:
        print(f"updated: {line.split(':')[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
