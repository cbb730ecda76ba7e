"""Offline fixtures for the traffic policy: the edge roles rendered on this
machine with their own tasks (bench/render.yml: validate, then config), the
mesh objects and the local stack from the Pulumi program under mocks
(helpers: policy_render.py)."""

from __future__ import annotations

import json

import pytest

from policy_render import Edge, render_edge


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """rendered(overrides) -> Edge, cached per overrides (a render is ~5 s)."""
    cache: dict[str, Edge] = {}

    def get(overrides: dict | None = None) -> Edge:
        key = json.dumps(overrides or {}, sort_keys=True)
        if key not in cache:
            cache[key] = render_edge(tmp_path_factory.mktemp("edge"), overrides or {})
        return cache[key]

    return get
