"""scale-up, scale-down, auto-scale, disable-auto-scale."""

from __future__ import annotations

from typing import Annotated

import typer

from .base import app, bounded
from .changes import AllowCapacityDrop, DryRun, Yes
from .kinds import AutoScale, resolve


ToTotal = Annotated[bool, typer.Option("--to", help="COUNT is the total wanted, not how many to add or remove.")]
ScaledClass = Annotated[str | None, typer.Option("--class", help="Stack: the class to scale (api).")]


@app.command("scale-up")
def scale_up(
    count: Annotated[int, typer.Argument(help="Instances to add (with --to: the total wanted).", metavar="COUNT",
                                         callback=bounded(1))],
    to: ToTotal = False, traffic_class: ScaledClass = None, dry_run: DryRun = False, yes: Yes = False,
) -> None:
    """Start instances and put them behind both load balancers, drain first, no request dropped."""
    resolve().scale("scale-up", +1, count, to, traffic_class, dry_run, yes, allow_capacity_drop=False)


@app.command("scale-down")
def scale_down(
    count: Annotated[int, typer.Argument(help="Instances to remove (with --to: the total wanted).", metavar="COUNT",
                                         callback=bounded(1))],
    to: ToTotal = False, traffic_class: ScaledClass = None, dry_run: DryRun = False, yes: Yes = False,
    allow_capacity_drop: AllowCapacityDrop = False,
) -> None:
    """Drain instances, take them out of both load balancers, stop them."""
    resolve().scale("scale-down", -1, count, to, traffic_class, dry_run, yes, allow_capacity_drop)


@app.command("auto-scale")
def auto_scale(
    min_replicas: Annotated[int | None, typer.Option("--min-replicas", "--min", callback=bounded(1), help=(
        "Fewest instances (stack: <class>MinReplicas, unchanged if not given; lab: 2)."))] = None,
    max_replicas: Annotated[int | None, typer.Option("--max-replicas", "--max", callback=bounded(1), help=(
        "Most instances (stack: <class>MaxReplicas, unchanged if not given; lab: 6)."))] = None,
    cpu: Annotated[int | None, typer.Option("--cpu-threshold", "--cpu", callback=bounded(1, 100, unit="(percent)"),
                                            help="Stack: HPA CPU target, percent (cpuTarget).")] = None,
    memory: Annotated[int | None, typer.Option("--memory-threshold", "--memory",
                                               callback=bounded(1, 100, unit="(percent)"),
                                               help="Stack: HPA memory target, percent (memoryTarget).")] = None,
    traffic_class: Annotated[str | None, typer.Option("--class", help="Stack: the class whose bounds to set "
                                                                      "(api).")] = None,
    target_inflight: Annotated[float | None, typer.Option(help="Lab: connections in flight per instance to aim for "
                                                               "(20).", callback=bounded(0, above=True))] = None,
    cooldown: Annotated[float | None, typer.Option(help="Lab: seconds below target before scaling down (60).",
                                                   callback=bounded(0, unit="seconds"))] = None,
    interval: Annotated[float | None, typer.Option(help="Lab: seconds between evaluations (5).",
                                                   callback=bounded(0, above=True, unit="seconds"))] = None,
    duration: Annotated[float | None, typer.Option(help="Lab: stop after this many seconds.",
                                                   callback=bounded(0, above=True, unit="seconds"))] = None,
    dry_run: DryRun = False, yes: Yes = False, allow_capacity_drop: AllowCapacityDrop = False,
) -> None:
    """Stack: turn the HPAs on, changing only the bounds and targets given.
    Lab: run the autoscaler here, scaling on connections in flight per
    instance (Ctrl-C or `disable-auto-scale` stops it)."""
    given = AutoScale(min_replicas, max_replicas, cpu, memory, traffic_class, target_inflight, cooldown, interval,
                      duration)
    resolve().auto_scale(given, dry_run, yes, allow_capacity_drop)


@app.command("disable-auto-scale")
def disable_auto_scale(
    replicas: Annotated[int | None, typer.Option(callback=bounded(1), help=(
        "Stack: the replicas each class keeps once its HPA is gone (default: the highest HPA minimum today, "
        "so no class runs fewer pods than its floor)."))] = None,
    dry_run: DryRun = False, yes: Yes = False, allow_capacity_drop: AllowCapacityDrop = False,
) -> None:
    """Stack: remove the HPAs, pinning replicas.  Lab: stop a running autoscaler."""
    resolve().disable_auto_scale(replicas, dry_run, yes, allow_capacity_drop)
