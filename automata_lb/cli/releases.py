"""rolling-update and rollback."""

from __future__ import annotations

from typing import Annotated

import typer

from .base import app
from .changes import AllowCapacityDrop, DryRun, Yes
from .kinds import resolve


@app.command("rolling-update")
def rolling_update(
    release: Annotated[str, typer.Argument(help="Lab: a release name (or an image with a pinned tag); "
                                                 "stack: a pinned image.")],
    dry_run: DryRun = False, yes: Yes = False,
) -> None:
    """One stable instance at a time: drain, replace, wait for health, enable
    (slow start); stop at the first failure and leave the rest as they were."""
    resolve().rolling_update(release, dry_run, yes)


@app.command()
def rollback(dry_run: DryRun = False, yes: Yes = False, allow_capacity_drop: AllowCapacityDrop = False) -> None:
    """Back to the state before the last change this tool made (see `history`)."""
    resolve().rollback(dry_run, yes, allow_capacity_drop)
