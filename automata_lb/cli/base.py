"""automata-lb: one command to see, scale, roll and roll back the tier.

\b
    automata-lb status                       # the lab (default target)
    automata-lb --inventory inventories/prod status --json
    automata-lb health-check                 # exit 1 when anything is unhealthy

\b
Exit codes: 0 done / healthy, 1 something is down or an operation failed,
2 bad arguments (nothing changed), 3 the target cannot be reached.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from rich.console import Console
import typer

from traffic.model import PolicyError, duration_ms

from ..prom import duration_seconds
from ..targets import ROOT, STACKS


OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3

app = typer.Typer(name="automata-lb", help=__doc__, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})
out = Console()
# Errors are read by scripts as much as by people: one line each, never wrapped.
err = Console(stderr=True, soft_wrap=True)


class State:
    inventory: Path | None = None
    stack: str | None = None
    target: Any = None   # the kind of target, resolved once per command (kinds.resolve)


state = State()


def version() -> str:
    """The installed package's version; from pyproject.toml when it runs uninstalled."""
    try:
        return importlib.metadata.version("automata-lb")
    except importlib.metadata.PackageNotFoundError:
        try:
            return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def _print_version(given: bool) -> None:
    if given:
        out.print(f"automata-lb {version()}", highlight=False)
        raise typer.Exit(OK)


# Checks of numeric options, run by typer as it reads them: a bad value
# exits 2 with "Invalid value for '--NAME'" before the command starts.

def bounded(low: float, high: float | None = None, *, above: bool = False, unit: str = "") -> Callable[[Any], Any]:
    """At least `low` (or above it), at most `high`; finite in every case."""
    wanted = (f"between {low:g} and {high:g}" if high is not None else f"above {low:g}" if above
              else f"at least {low:g}") + (f" {unit}" if unit else "")

    def check(value: Any) -> Any:
        if value is None:
            return value
        if not math.isfinite(value) or value < low or (above and value == low) or (high is not None and value > high):
            raise typer.BadParameter(f"must be {wanted}, got {value:g}")
        return value

    return check


def prometheus_window(value: str) -> str:
    try:
        duration_seconds(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@app.callback()
def main(
    target: Annotated[str, typer.Option(help="The Podman lab (the default).")] = "lab",
    inventory_path: Annotated[Path | None, typer.Option(
        "--inventory", "-i", help="Edge VMs of an Ansible inventory, e.g. inventories/prod.")] = None,
    stack: Annotated[str | None, typer.Option(help=f"A Pulumi stack: {', '.join(STACKS)}.")] = None,
    vault_password_file: Annotated[Path | None, typer.Option(
        help="Ansible Vault password file of the inventory (also read from ANSIBLE_VAULT_PASSWORD_FILE).")] = None,
    _version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                           callback=_print_version)] = False,
) -> None:
    if target != "lab":
        raise typer.BadParameter("only 'lab' is a --target; use --inventory PATH or --stack NAME", param_hint="--target")
    if inventory_path and stack:
        raise typer.BadParameter("give --inventory or --stack, not both", param_hint="--stack")
    if stack is not None and stack not in STACKS:
        raise typer.BadParameter(f"{stack!r} is not one of {', '.join(STACKS)}", param_hint="--stack")
    if vault_password_file is not None:
        if not vault_password_file.is_file():
            raise typer.BadParameter(f"{vault_password_file} is not a file", param_hint="--vault-password-file")
        # Every Ansible command the CLI runs (ansible-inventory, the renders) reads it from there.
        os.environ["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault_password_file.resolve())
    state.inventory, state.stack, state.target = inventory_path, stack, None


def ago(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def duration_option(value: str, hint: str) -> float:
    try:
        return duration_ms(hint, value) / 1000
    except PolicyError as exc:
        raise typer.BadParameter(exc.problem, param_hint=hint) from None



