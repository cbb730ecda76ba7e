"""YAML that people wrote: read and written back with comments, quotes and
flow style kept (ruamel.yaml round trip)."""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML


def round_trip() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 200
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def plain(value: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
