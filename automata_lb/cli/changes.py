"""What every change command shares: its options, the checks of its
arguments, the plan, the confirmation, and the change itself on the
lab's or an inventory's edge (edge_change) or on a stack (stack_change).

Every change: arguments checked before anything is touched (exit 2, naming
the argument), the plan printed, --dry-run stops there, production asks
unless --yes, progress while it runs, a history record to roll back to."""

from __future__ import annotations

import copy
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import typer

from infra.settings import ConfigError, Invalid, pinned_image

from .. import backend_changes, history, instances
from .. import stack as stack_ops
from ..backend_changes import BackendState
from ..targets import TargetError
from .base import FAILED, OK, USAGE, err, out, resolve, state

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


def edge_change(command: str, desired_of: Callable[[BackendState], BackendState], dry_run: bool, yes: bool,
                 details: dict) -> None:
    """A change of the backends of the lab or of an inventory's edge nodes:
    plan `desired_of(what runs)`, refuse what cannot be done here before
    anything changes, print the plan, then (unless --dry-run) reconcile."""
    target = resolve()
    before = backend_changes.current(target)
    try:
        desired = desired_of(copy.deepcopy(before))
        why = backend_changes.refusal(target, before, desired)
    except backend_changes.NoSpare as exc:
        if not (why := instances.of(target).refusal()):
            more = instances.of(target).more_spares()
            raise typer.BadParameter(f"{target.name}: {exc}" + (f" ({more})" if more else ""),
                                     param_hint="COUNT") from None
    if why:
        err.print(f"automata-lb: {command} starts or stops instances: {why}")
        raise typer.Exit(USAGE)
    plan = edge_plan(before, desired)
    out.print(f"[bold]{command}[/] on {target.name}:")
    for line in plan or ["nothing to change"]:
        out.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)
    if dry_run or not plan:
        raise typer.Exit(OK)
    confirm(target.production, command, yes)
    started = time.monotonic()
    with out.status("working..."):
        try:
            backend_changes.reconcile(target, desired, say=say)
        except TargetError as exc:
            err.print(f"automata-lb: {command} stopped: {exc}")
            history.record(target.name, command, before.as_dict(), backend_changes.current(target).as_dict(),
                           outcome="failed", error=str(exc), **details)
            raise typer.Exit(FAILED) from None
    seconds = time.monotonic() - started
    history.record(target.name, command, before.as_dict(), desired.as_dict(), outcome="done",
                   seconds=round(seconds, 1), **details)
    out.print(f"done in {seconds:.0f}s")


def edge_plan(before: BackendState, after: BackendState) -> list[str]:
    lines = []
    for name in after.names():
        if name not in before.names():
            lines.append(f"+ start {name} ({after.release(name)}) and add it to both load balancers")
        elif after.release(name) != before.release(name):
            lines.append(f"~ {name}: drain, replace {before.release(name)} -> {after.release(name)}, "
                         "wait for health, enable")
    for name in before.names():
        if name not in after.names():
            lines.append(f"- drain {name}, remove it from both load balancers, stop it (SIGTERM)")
    if after.canary_share != before.canary_share:
        lines.append(f"~ canary share {before.canary_share}% -> {after.canary_share}% on NGINX (checked, reloaded) "
                     "and HAProxy (runtime API), and in the inventory")
    if any(line[0] in "+-" for line in lines):
        lines.append("  then: write the inventory, and the load balancers' pools as a converge would (checked, reload)")
    return lines


def stack_change(command: str, values_of: Callable[[dict], dict], dry_run: bool, yes: bool,
                  allow_capacity_drop: bool = False, note: str = "") -> None:
    """Plan `values_of(effective config)`, print it and its object diff, then
    (unless --dry-run) confirm on a protected stack, write and apply.  Only
    the keys `values_of` returns change: commands leave out what the user
    did not give.  A change that lowers a protected stack's capacity is
    refused (exit 2, dry run included) without --allow-capacity-drop."""
    name = state.stack
    effective = stack_ops.effective(name)
    values = values_of(effective)
    try:
        change = stack_ops.plan(name, values)
    except ConfigError as exc:
        err.print(f"automata-lb: refused: {exc}")
        raise typer.Exit(USAGE) from None
    # Plans are read by scripts and people alike: one line per change, never wrapped.
    out.print(f"[bold]{command}[/] on stack {name}: " +
              (", ".join(f"{k}: {change.before.get(k)!r} -> {v!r}" for k, v in change.values.items())
               or "nothing to change"), soft_wrap=True, markup=True, highlight=False)
    if note:
        out.print(f"  ({note})", soft_wrap=True, markup=False, highlight=False)
    for line in change.diff or ["no object changes"]:
        out.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)
    protected = stack_ops.protected(name)
    if change.drops and protected and not allow_capacity_drop:
        err.print(f"automata-lb: refused: {command} lowers the capacity of protected stack {name}: "
                  + "; ".join(change.drops) + ". Give --allow-capacity-drop to go ahead.")
        raise typer.Exit(USAGE)
    for line in change.drops:
        out.print(f"  lowers capacity: {line}", soft_wrap=True, markup=False, highlight=False)
    if dry_run or change.empty:
        raise typer.Exit(OK)
    confirm(protected, f"{command} (stack {name})", yes)
    stack_ops.write(name, change.values)
    history.record(f"stack-{name}", command, change.before, change.values, outcome="written")
    applied, cmd = stack_ops.apply(name)
    if applied:
        out.print(f"applied: {cmd}")
    else:
        out.print(f"stacks/Pulumi.{name}.yaml updated; apply it with:\n  {cmd}")

