"""What the API server does to a custom resource before it admits it, for validating the
RayService against KubeRay's CRD schema offline."""

from __future__ import annotations

import copy
from typing import Any


def drop_nulls(value: Any) -> Any:
    """Remove null fields and list items, as the API server prunes nulls of non-nullable
    fields (none of KubeRay's fields is nullable) before defaulting."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value if v is not None]
    return value


def apply_defaults(schema: dict, value: Any) -> Any:
    """Fill the schema's `default`s into `value`: a property absent from an object that
    is present gets its default (then defaulted itself), like structural-schema defaulting."""
    if isinstance(value, dict):
        out = dict(value)
        for name, prop in schema.get("properties", {}).items():
            if name not in out and "default" in prop:
                out[name] = copy.deepcopy(prop["default"])
            if name in out:
                out[name] = apply_defaults(prop, out[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in out.keys() - schema.get("properties", {}).keys():
                out[name] = apply_defaults(extra, out[name])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def reject_unknown_fields(schema: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that lists its
    properties: kubectl's default strict field validation refuses unknown fields instead
    of silently pruning them (the converted CRD schema carries no
    x-kubernetes-preserve-unknown-fields, so no object here is open by design)."""
    if isinstance(schema, dict):
        out = {k: reject_unknown_fields(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [reject_unknown_fields(v) for v in schema]
    return schema


