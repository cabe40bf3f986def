"""The offline stand-in for the API server's admission of a custom resource."""

from __future__ import annotations

import jsonschema
import pytest

from tests.helm.admission import apply_defaults, drop_nulls, reject_unknown_fields

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "mode": {"type": "string", "default": "auto"},
                "ports": {"type": "array", "items": {"type": "object", "properties": {
                    "port": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "limits": {"type": "object", "properties": {"burst": {"type": "integer", "default": 1}}},
            },
        },
        "metadata": {"type": "object"},
    },
}


def test_absent_fields_get_their_defaults_at_every_depth():
    admitted = apply_defaults(SCHEMA, {"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}})
    assert admitted == {"spec": {"mode": "auto", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}}


def test_defaults_do_not_create_absent_parent_objects_or_override_values():
    admitted = apply_defaults(SCHEMA, {"spec": {"mode": "manual"}})
    assert admitted == {"spec": {"mode": "manual"}}  # `limits` stays absent, so no `burst`


def test_nulls_are_dropped_before_defaulting():
    admitted = apply_defaults(SCHEMA, drop_nulls({"spec": {"mode": None, "labels": None, "ports": [None, {"port": 1}]}}))
    assert admitted == {"spec": {"mode": "auto", "ports": [{"port": 1, "protocol": "TCP"}]}}


def test_unknown_fields_are_rejected_but_open_maps_stay_open():
    validator = jsonschema.Draft7Validator(reject_unknown_fields(SCHEMA))
    validator.validate({"metadata": {"anything": 1}, "spec": {"labels": {"any-key": "v"}}})
    with pytest.raises(jsonschema.ValidationError, match="'mdoe' was unexpected"):
        validator.validate({"spec": {"mdoe": "auto"}})
