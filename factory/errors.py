"""Errors of the factory. A CLI prints the message and exits non-zero; the message
names the file, line or field to fix."""

from __future__ import annotations

from adapters.errors import LorafleetError


class FactoryError(LorafleetError):
    """Training or merging cannot proceed with this input."""


class TrainConfigError(FactoryError):
    """The training config is missing, not YAML, or fails the schema."""


class DatasetError(FactoryError):
    """A dataset row is malformed; the message starts with `file:line`."""
