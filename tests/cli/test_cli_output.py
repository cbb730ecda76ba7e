"""What the read commands print is whole: JSON a strict parser accepts, and
tables that keep every name in one piece at 80 columns and through a pipe.
The target is described here (names as long as real ones get); the lab
suite runs the same commands against real nodes."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from automata_lb import cli, health
from automata_lb.output import json_text
from automata_lb.prom import Prometheus
from automata_lb.targets import Target

runner = CliRunner()

NODES = ["edge-eu-west-1a.prod.automata.example.com", "edge-eu-west-1b.prod.automata.example.com"]
SERVERS = ["backend-api-stable-7f9c4d-x2kqp", "backend-api-canary-5b8d7c-q9vzt", "backend-ai-stable-6d4f9b-lm3rw"]
RELEASE = "1.1.0-rc.1+build.20250101"


def strict_json(text: str):
    """Parse as a strict parser does: NaN, Infinity and -Infinity are errors."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def status_doc() -> dict:
    lb = {"active": True, "version": "1.27.3-1", "config_hash": "1913ed5d0000", "last_reload": time.time() - 48}
    edges = [{"node": n, "reachable": True, "nginx": lb, "haproxy": {**lb, "canary_share": 10}} for n in NODES]
    edges.append({"node": "edge-eu-west-1c.prod.automata.example.com", "reachable": False,
                  "error": "ssh: connect to host 10.0.3.7 port 22: Connection timed out"})
    servers = [{"server": s, "version": "stable", "release": RELEASE, "state": "UP", "weight": 100, "sessions": 12,
                "rps": 32.3, "error_ratio": float("nan"), "p99_s": float("inf")} for s in SERVERS]
    return {"target": "inventories/prod", "time": time.time(), "healthy": True,
            "prometheus": "http://prometheus.monitoring.svc:9090", "edges": edges, "servers": servers}


def names_whole(text: str, names: list[str]) -> list[str]:
    """The names that do not appear unbroken on one line of `text`."""
    lines = text.splitlines()
    return [n for n in names if not any(n in line for line in lines)]


@pytest.fixture
def target(monkeypatch):
    described = Target("inventory", "inventories/prod", Path("inventories/prod"), (), (),
                       prometheus_url="http://prometheus.monitoring.svc:9090")
    monkeypatch.setattr(cli.kinds, "lab", lambda: described)
    return described


class NotANumberPrometheus(Prometheus):
    """Answers every query with NaN and +Inf samples, as Prometheus does for a
    ratio over no requests and for a quantile of empty buckets."""

    def query(self, expr: str) -> list[dict]:
        labels = {"class": "api", "proxy": "be_api", "instance": SERVERS[0]}
        return [{"metric": labels, "value": [0, "NaN"]}, {"metric": {**labels, "class": "ai", "proxy": "be_ai",
                                                                     "instance": SERVERS[1]}, "value": [0, "+Inf"]}]


def test_metrics_json_is_strict_json_with_null_for_what_prometheus_could_not_compute(target, monkeypatch):
    monkeypatch.setattr(cli.reading, "Prometheus", NotANumberPrometheus)
    result = runner.invoke(cli.app, ["metrics", "--json"])
    assert result.exit_code == 0, result.output
    doc = strict_json(result.stdout)
    assert doc["tiers"]["nginx"]["5xx_ratio"] == {"api": None, "ai": None}
    assert doc["tiers"]["backends"][SERVERS[0]]["rps"] is None
    assert doc["tiers"]["backends"][SERVERS[1]]["p99_s"] is None


def test_metrics_table_shows_a_dash_where_prometheus_has_no_number(target, monkeypatch):
    monkeypatch.setattr(cli.reading, "Prometheus", NotANumberPrometheus)
    result = runner.invoke(cli.app, ["metrics"])
    assert result.exit_code == 0, result.output
    assert "nan" not in result.stdout.lower() and "inf" not in result.stdout.lower()
    assert names_whole(result.stdout, SERVERS[:2]) == []


def test_status_json_is_strict_json(target, monkeypatch):
    monkeypatch.setattr(cli.reading, "collect_status", lambda _: status_doc())
    result = runner.invoke(cli.app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    servers = strict_json(result.stdout)["servers"]
    assert [(s["error_ratio"], s["p99_s"]) for s in servers] == [(None, None)] * 3


def test_json_text_never_writes_a_bare_nan():
    assert strict_json(json_text({"a": [float("nan"), {"b": float("-inf")}], "c": (1.5,)})) == \
        {"a": [None, {"b": None}], "c": [1.5]}


@pytest.mark.parametrize("width", [80, 60, 120])
def test_status_at_any_width_keeps_every_name_whole(width):
    buffer = io.StringIO()
    console = Console(file=buffer, width=width)
    console.print(cli.render_status(status_doc(), console), crop=False)
    text = buffer.getvalue()
    missing = names_whole(text, [*NODES, "edge-eu-west-1c.prod.automata.example.com", *SERVERS, RELEASE])
    assert missing == [], text
    if width >= 80:  # the names fit, so the table does too
        assert max(len(line) for line in text.splitlines()) <= width, text
    assert "…" not in text


def test_status_piped_keeps_every_name_whole_and_says_what_it_left_out(target, monkeypatch):
    monkeypatch.setattr(cli.reading, "collect_status", lambda _: status_doc())
    result = runner.invoke(cli.app, ["status"])  # not a terminal: rich assumes 80 columns
    assert result.exit_code == 0, result.output
    assert names_whole(result.stdout, [*NODES, *SERVERS, RELEASE]) == [], result.stdout
    assert "not shown at 80 columns:" in result.stdout


def test_health_check_piped_keeps_components_and_endpoints_whole(target, monkeypatch):
    checks = [health.Check(f"{NODES[0]} stats page", "http://127.0.0.1:8404/haproxy-stats", 401, 3.2, (401,)),
              health.Check(f"{NODES[0]} haproxy", "http://127.0.0.1:8000/lb-health", 200, 1.0),
              # Wider than 80 columns on its own: printed whole past the edge.
              health.Check(f"{SERVERS[0]} (from {NODES[0]})", "http://10.0.12.34:8000/health/detailed", 0, 5000.0)]
    monkeypatch.setattr(health, "run", lambda _: checks)
    result = runner.invoke(cli.app, ["health-check"])
    assert result.exit_code == 1  # one check failed
    assert names_whole(result.stdout, [c.component for c in checks] + [c.endpoint for c in checks]) == [], \
        result.stdout
    assert "…" not in result.stdout
