"""What every change command shares: its options, the checks of its
arguments, the confirmation and the progress lines.  The change itself is
the target's (kinds/: Edge.change, Stack.change).

Every change: arguments checked before anything is touched (exit 2, naming
the argument), the plan printed, --dry-run stops there, production asks
unless --yes, progress while it runs, a history record to roll back to."""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Annotated

import typer

from infra.settings import Invalid, pinned_image

from .base import FAILED, err

DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing production.")]
AllowCapacityDrop = Annotated[bool, typer.Option(
    "--allow-capacity-drop", help="Stack: go ahead although the change lowers a protected stack's capacity "
                                  "(fewer pods, lower HPA bounds, an HPA or PodDisruptionBudget removed).")]
RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def release_name(value: str, param: str) -> str:
    """A lab release name, or the tag of a pinned image reference."""
    if "/" in value or ":" in value or "@" in value:
        checked_image(value, param)
        tag = value.rsplit("/", 1)[-1].partition(":")[2] or value.partition("@")[2][:19]
        return tag
    if not RELEASE.match(value):
        raise typer.BadParameter(f"{value!r} is not a release name (letters, digits, . _ -)", param_hint=param)
    return value


def checked_image(value: str, param: str) -> str:
    try:
        pinned_image(value)
    except Invalid as exc:
        raise typer.BadParameter(str(exc), param_hint=param) from None
    return value


def confirm(production: bool, what: str, yes: bool) -> None:
    if not production or yes:
        return
    if not sys.stdin.isatty():
        err.print(f"automata-lb: refusing to {what} on production without --yes (no terminal to ask on)")
        raise typer.Exit(FAILED)
    if not typer.confirm(f"{what} on production?"):
        raise typer.Exit(FAILED)


def say(message: str) -> None:
    err.print(f"[dim]{datetime.now():%H:%M:%S}[/] {message}")
