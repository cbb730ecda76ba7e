"""Every numeric and duration option is checked as it is read: a bad value
exits 2 naming the option, before the command reaches any target."""

from __future__ import annotations

import importlib.metadata
import tomllib

import pytest
from typer.testing import CliRunner

from automata_lb import cli
from automata_lb.prom import duration_seconds
from automata_lb.targets import ROOT

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_target(monkeypatch):
    """A command that gets past its options would reach for the target: fail the test instead."""
    def reached(*_):
        raise AssertionError("the command ran with a bad option")
    monkeypatch.setattr(cli.kinds, "lab", reached)
    monkeypatch.setattr(cli.kinds, "inventory", reached)


def refused(*args: str):
    result = runner.invoke(cli.app, list(args))
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


def test_metrics_window_must_be_a_prometheus_duration():
    assert "Invalid value for '--window': '5x' is not a Prometheus duration" in refused("metrics", "--window", "5x")


def test_auto_scale_refuses_a_negative_cooldown_and_a_zero_interval():
    assert "Invalid value for '--cooldown': must be at least 0 seconds, got -5" in \
        refused("auto-scale", "--cooldown", "-5", "--interval", "0", "--dry-run")
    assert "Invalid value for '--interval': must be above 0 seconds, got 0" in \
        refused("auto-scale", "--interval", "0", "--dry-run")


@pytest.mark.parametrize(("args", "option"), [
    (["metrics", "--window", "0s"], "--window"),
    (["metrics", "--window", "-1m"], "--window"),
    (["metrics", "--window", "1m30"], "--window"),
    (["status", "--watch", "0"], "--watch"),
    (["status", "--watch", "nan"], "--watch"),
    (["status", "--watch", "inf"], "--watch"),
    (["scale-up", "--", "-1"], "COUNT"),
    (["scale-down", "0"], "COUNT"),
    (["auto-scale", "--min-replicas", "0"], "--min-replicas"),
    (["auto-scale", "--max-replicas", "-3"], "--max-replicas"),
    (["auto-scale", "--cpu-threshold", "0"], "--cpu-threshold"),
    (["auto-scale", "--memory-threshold", "101"], "--memory-threshold"),
    (["auto-scale", "--target-inflight", "0"], "--target-inflight"),
    (["auto-scale", "--target-inflight", "nan"], "--target-inflight"),
    (["auto-scale", "--duration", "-10"], "--duration"),
    (["auto-scale", "--cooldown", "inf"], "--cooldown"),
    (["canary-deploy", "v2", "--weight", "-1"], "--weight"),
    (["canary-deploy", "v2", "--weight", "101"], "--weight"),
    (["canary-deploy", "v2", "--steps", "10,-5,100"], "--steps"),
    (["canary-deploy", "v2", "--steps", "10,50", "--interval", "-30s"], "--interval"),
    (["history", "--limit", "0"], "--limit"),
])
def test_a_bad_number_is_refused_naming_its_option(args, option):
    assert option in refused(*args)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800),
                                               ("500ms", 0.5), ("1w", 604800)])
def test_prometheus_durations(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "0s", "0m0s", "m", "5", "30m1h", "5 m"])
def test_not_prometheus_durations(text):
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        duration_seconds(text)


def test_version_is_the_package_version():
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"automata-lb {importlib.metadata.version('automata-lb')}\n"


def test_version_without_package_metadata_comes_from_pyproject(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", missing)
    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = runner.invoke(cli.app, ["--version"])
    assert (result.exit_code, result.output) == (0, f"automata-lb {pinned}\n")
