"""Each kind of target does what it can and refuses the rest by name: a
command given a stack never reads the lab instead, an inventory is never
told about an autoscaler it does not have, and an option of one kind given
to another is refused before anything is read or changed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from automata_lb import cli

runner = CliRunner()


@pytest.fixture(autouse=True)
def nothing_is_read(monkeypatch):
    """Reaching for the lab or an inventory fails the test: every case here
    is decided before any target is read."""
    def reached(*_):
        raise AssertionError("a target was read")
    monkeypatch.setattr(cli.kinds, "lab", reached)
    monkeypatch.setattr(cli.kinds, "inventory", reached)


def refused(*args: str) -> str:
    result = runner.invoke(cli.app, list(args))
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("command", [["status"], ["health-check"], ["metrics"], ["load-test", "--users", "5"]])
def test_a_command_that_reads_edge_nodes_is_refused_on_a_stack_naming_it(command):
    # It used to read the lab instead, as if no --stack had been given.
    assert f"{command[0]} on stack prod:" in refused("--stack", "prod", *command)


@pytest.mark.parametrize("command", [["auto-scale", "--duration", "5"], ["disable-auto-scale"]])
def test_the_autoscaler_commands_are_refused_on_an_inventory_naming_it(tmp_path, command):
    message = refused("--inventory", str(tmp_path), *command)
    assert f"{command[0]} on inventory {tmp_path}: the autoscaler runs for the lab" in message


@pytest.mark.parametrize(("args", "option"), [
    (["scale-up", "1", "--class", "ai"], "--class"),
    (["scale-down", "1", "--class", "ai"], "--class"),
    (["auto-scale", "--cpu-threshold", "60"], "--cpu-threshold"),
    (["auto-scale", "--class", "ai"], "--class"),
    (["disable-auto-scale", "--replicas", "3"], "--replicas"),
])
def test_a_stack_option_given_to_the_lab_is_refused_naming_it(args, option):
    assert f"Invalid value for {option}:" in refused(*args)


@pytest.mark.parametrize(("args", "option"), [
    (["auto-scale", "--target-inflight", "10"], "--target-inflight"),
    (["auto-scale", "--cooldown", "30"], "--cooldown"),
])
def test_a_lab_option_given_to_a_stack_is_refused_naming_it(args, option):
    assert f"Invalid value for {option}:" in refused("--stack", "staging", *args)
