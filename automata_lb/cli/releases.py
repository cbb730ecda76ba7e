"""rolling-update and rollback."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from .. import edge, history
from ..backend_changes import BackendState
from .base import FAILED, OK, app, err, out, resolve, state
from .changes import AllowCapacityDrop, DryRun, Yes, checked_image, confirm, edge_change, release_name, stack_change


@app.command("rolling-update")
def rolling_update(
    release: Annotated[str, typer.Argument(help="Lab: a release name (or an image with a pinned tag); "
                                                 "stack: a pinned image.")],
    dry_run: DryRun = False, yes: Yes = False,
) -> None:
    """One stable instance at a time: drain, replace, wait for health, enable
    (slow start); stop at the first failure and leave the rest as they were."""
    if state.stack:
        image = checked_image(release, "RELEASE")
        stack_change("rolling-update", lambda cfg: {"image": image}, dry_run, yes)
        return
    name = release_name(release, "RELEASE")

    def desired(state_: BackendState) -> BackendState:
        for b in state_.backends:
            state_.releases[b["name"]] = name
        return state_

    edge_change("rolling-update", desired, dry_run, yes, {"release": name})



@app.command()
def rollback(dry_run: DryRun = False, yes: Yes = False, allow_capacity_drop: AllowCapacityDrop = False) -> None:
    """Back to the state before the last change this tool made (see `history`)."""
    if state.stack:
        entry = history.last_change(f"stack-{state.stack}")
        if not entry:
            err.print(f"automata-lb: nothing to roll back on stack {state.stack}")
            raise typer.Exit(FAILED)
        stack_change("rollback", lambda cfg: entry["before"], dry_run, yes, allow_capacity_drop)
        return
    target = resolve()
    entry = history.last_change(target.name)
    if not entry:
        err.print(f"automata-lb: nothing to roll back on {target.name}")
        raise typer.Exit(FAILED)
    if set(entry["before"]) == {"canary_share"}:  # the weight alone: nobody to deploy a release
        share = entry["before"]["canary_share"]
        out.print(f"rolling back `{entry['command']}`: canary weight -> {share}% on every node")
        if dry_run or share is None:
            raise typer.Exit(OK)
        confirm(target.production, "rollback", yes)
        edge.set_canary_weight(target, share)
        history.record(target.name, "rollback", entry["after"], entry["before"], outcome="done",
                       undoes=entry["command"])
        return
    if set(entry["before"]) != set(BackendState.__dataclass_fields__):
        err.print(f"automata-lb: the last change on {target.name}, `{entry['command']}`, recorded no state to go "
                  "back to (it ended a rollout); `history` shows what ran")
        raise typer.Exit(FAILED)
    out.print(f"rolling back `{entry['command']}` of {datetime.fromtimestamp(entry['time']):%Y-%m-%d %H:%M:%S}")
    edge_change("rollback", lambda _: BackendState.from_dict(entry["before"]), dry_run, yes, {"undoes": entry["command"]})


