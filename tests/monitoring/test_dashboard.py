"""The load-balancer dashboard: generated, importable, and honest about its datasource."""

from __future__ import annotations

import json

from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from monitoring import dashboard
from monitoring.__main__ import DASHBOARD_JSON


def _lost(original, parsed, path="") -> list[str]:
    """Paths of `original` that `parsed` dropped or changed (unknown keys are dropped by the model)."""
    if isinstance(original, dict):
        if not isinstance(parsed, dict):
            return [path]
        return [p for k, v in original.items()
                for p in ([f"{path}/{k}"] if k not in parsed else _lost(v, parsed[k], f"{path}/{k}"))]
    if isinstance(original, list):
        if not isinstance(parsed, list) or len(parsed) != len(original):
            return [path]
        return [p for i, (a, b) in enumerate(zip(original, parsed, strict=True)) for p in _lost(a, b, f"{path}[{i}]")]
    return [] if original == parsed else [path]


def test_the_committed_json_is_what_the_builder_makes():
    assert DASHBOARD_JSON.read_text() == dashboard.render(), "run `python -m monitoring build` and commit"


def test_grafanas_dashboard_model_reads_every_field_back():
    committed = json.loads(DASHBOARD_JSON.read_text())
    plugins.register_default_plugins()
    parsed = json.loads(json.dumps(model.Dashboard.from_json(committed), cls=JSONEncoder))
    assert _lost(committed, parsed) == []


def test_every_query_uses_the_datasource_variable_and_no_fixed_uid():
    board = dashboard.build()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_panel_the_platform_promises_is_there():
    titles = {p["title"] for p in dashboard.build()["panels"]}
    assert {
        "Request rate by backend instance", "Response time distribution", "Error rate (5xx share) by tier",
        "Connection pool status", "Circuit breakers", "Autoscaling status", "Resource utilisation: CPU",
        "Resource utilisation: memory", "HAProxy server state and weight", "Canary share",
        "NGINX connections", "Rate-limited requests (429) by class", "Edge CPU", "Edge file descriptors",
    } <= titles
    assert set(dashboard.EMPTY_ON_LAB) <= titles


def test_panels_do_not_overlap():
    cells = set()
    for panel in dashboard.build()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
