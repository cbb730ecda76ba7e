"""scale-up, scale-down, auto-scale, disable-auto-scale."""

from __future__ import annotations

import contextlib
import copy
from typing import Annotated, Any

import typer

from infra import naming

from .. import autoscale, backend_changes, history, instances
from .. import stack as stack_ops
from ..backend_changes import BackendState
from ..prom import Prometheus
from .base import OK, UNREACHABLE, USAGE, app, bounded, err, out, resolve, state
from .changes import AllowCapacityDrop, DryRun, Yes, edge_change, say, stack_change


ToTotal = Annotated[bool, typer.Option("--to", help="COUNT is the total wanted, not how many to add or remove.")]
ScaledClass = Annotated[str, typer.Option("--class", help="Stack: the class to scale.")]


@app.command("scale-up")
def scale_up(
    count: Annotated[int, typer.Argument(help="Instances to add (with --to: the total wanted).", metavar="COUNT",
                                         callback=bounded(1))],
    to: ToTotal = False, traffic_class: ScaledClass = "api", dry_run: DryRun = False, yes: Yes = False,
) -> None:
    """Start instances and put them behind both load balancers, drain first, no request dropped."""
    _scale(+1, count, to, traffic_class, dry_run, yes)


@app.command("scale-down")
def scale_down(
    count: Annotated[int, typer.Argument(help="Instances to remove (with --to: the total wanted).", metavar="COUNT",
                                         callback=bounded(1))],
    to: ToTotal = False, traffic_class: ScaledClass = "api", dry_run: DryRun = False, yes: Yes = False,
    allow_capacity_drop: AllowCapacityDrop = False,
) -> None:
    """Drain instances, take them out of both load balancers, stop them."""
    _scale(-1, count, to, traffic_class, dry_run, yes, allow_capacity_drop)


def _scale(sign: int, count: int, to: bool, traffic_class: str, dry_run: bool, yes: bool,
           allow_capacity_drop: bool = False) -> None:
    command = "scale-up" if sign > 0 else "scale-down"
    if state.stack:
        if traffic_class not in ("api", "websocket", "ai"):
            raise typer.BadParameter(f"{traffic_class!r} is not one of api, websocket, ai", param_hint="--class")

        def values(cfg: dict) -> dict:
            key = f"{traffic_class}MinReplicas" if cfg["autoscaling"] else "replicas"
            have = cfg[key]
            wanted = count if to else have + sign * count
            if wanted < 1:
                raise typer.BadParameter(f"{key} would become {wanted}; at least 1 must run", param_hint="COUNT")
            if sign * (wanted - have) < 0:  # --to the other way, as the lab refuses it
                other = "scale-down" if sign > 0 else "scale-up"
                raise typer.BadParameter(f"{key} is {have} today; {command} --to {count} would go the other way "
                                         f"(that is `{other} {count} --to`)", param_hint="COUNT")
            return {key: wanted}

        stack_change(command, values, dry_run, yes, allow_capacity_drop)
        return

    def desired(state_: BackendState) -> BackendState:
        have = len(state_.backends)
        wanted = count if to else have + sign * count
        if wanted < 1:
            raise typer.BadParameter(f"{have} stable instances run; {wanted} would leave none", param_hint="COUNT")
        if (sign > 0 and wanted < have) or (sign < 0 and wanted > have):
            raise typer.BadParameter(f"{have} run already; --to {count} would go the other way", param_hint="COUNT")
        return backend_changes.with_stable_count(state_, wanted, fleet.spares())

    fleet = instances.of(resolve())
    edge_change(command, desired, dry_run, yes, {"count": count, "to": to})



# The lab autoscaler's settings when not given.  A stack has no such
# defaults: what auto-scale is not told stays as the stack has it.
LAB_AUTOSCALE = {"min_replicas": 2, "max_replicas": 6, "target_inflight": 20.0, "cooldown": 60.0, "interval": 5.0}


def _given(**options: Any) -> list[str]:
    """The options (by flag) the user gave, of those passed as flag=value."""
    return [flag for flag, value in options.items() if value is not None]


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
    traffic_class: Annotated[str, typer.Option("--class", help="Stack: the class whose bounds to set.")] = "api",
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
    if state.stack:
        lab_only = _given(**{"--target-inflight": target_inflight, "--cooldown": cooldown, "--interval": interval,
                             "--duration": duration})
        if lab_only:
            raise typer.BadParameter("drives the lab autoscaler; a stack's HPAs take their pace from the "
                                     "scaleUp*/scaleDown* keys of its config", param_hint=lab_only[0])
        if traffic_class not in ("api", "websocket", "ai"):
            raise typer.BadParameter(f"{traffic_class!r} is not one of api, websocket, ai", param_hint="--class")
        low_key, high_key = f"{traffic_class}MinReplicas", f"{traffic_class}MaxReplicas"

        def values(cfg: dict) -> dict:
            low = cfg[low_key] if min_replicas is None else min_replicas
            high = cfg[high_key] if max_replicas is None else max_replicas
            if low > high:
                raise typer.BadParameter(
                    f"need --min-replicas ({low}{'' if min_replicas is not None else f', {low_key} today'}) <= "
                    f"--max-replicas ({high}{'' if max_replicas is not None else f', {high_key} today'})",
                    param_hint="--min-replicas" if min_replicas is not None else "--max-replicas")
            given = {"autoscaling": True, low_key: min_replicas, high_key: max_replicas, "cpuTarget": cpu,
                     "memoryTarget": memory}
            return {key: value for key, value in given.items() if value is not None}

        stack_change("auto-scale", values, dry_run, yes, allow_capacity_drop)
        return
    stack_only = _given(**{"--cpu-threshold": cpu, "--memory-threshold": memory})
    if stack_only:
        raise typer.BadParameter("sets a stack's HPAs; the lab autoscaler scales on connections in flight "
                                 "(--target-inflight)", param_hint=stack_only[0])
    given = {"min_replicas": min_replicas, "max_replicas": max_replicas, "target_inflight": target_inflight,
             "cooldown": cooldown, "interval": interval}
    lab_policy = {name: LAB_AUTOSCALE[name] if value is None else value for name, value in given.items()}
    min_replicas, max_replicas = lab_policy["min_replicas"], lab_policy["max_replicas"]
    if min_replicas > max_replicas:
        raise typer.BadParameter(f"need --min-replicas ({min_replicas}) <= --max-replicas ({max_replicas})",
                                 param_hint="--min-replicas")
    if max_replicas > instances.LAB_STABLE:
        raise typer.BadParameter(f"the lab holds at most {instances.LAB_STABLE} stable instances",
                                 param_hint="--max-replicas")
    target = resolve()
    if why := instances.of(target).autoscaling_refusal():
        err.print(f"automata-lb: auto-scale on {target.name}: {why}")
        raise typer.Exit(USAGE)
    if not target.prometheus_url:
        err.print(f"automata-lb: the autoscaler reads Prometheus; {target.prometheus_missing}")
        raise typer.Exit(UNREACHABLE)
    policy = autoscale.Policy(min_replicas, max_replicas, lab_policy["target_inflight"], lab_policy["cooldown"],
                              lab_policy["interval"])
    out.print(f"autoscaling the lab's stable instances between {min_replicas} and {max_replicas} at "
              f"{policy.target_inflight:g} in flight each (cool-down {policy.cooldown_s:g}s); "
              f"query: {autoscale.INFLIGHT}")
    if dry_run:
        raise typer.Exit(OK)

    def scale_to(n: int) -> None:
        before = backend_changes.current(target)
        desired = backend_changes.with_stable_count(copy.deepcopy(before), n, instances.LabInstances().spares())
        say(f"scaling to {n}")
        backend_changes.reconcile(target, desired, say=say)
        history.record(target.name, "auto-scale", before.as_dict(), desired.as_dict(), outcome="done", replicas=n)

    scaler = autoscale.Autoscaler(Prometheus(target.prometheus_url), policy,
                                  replicas=lambda: len(backend_changes.current(target).backends), scale_to=scale_to, say=say)
    with contextlib.suppress(KeyboardInterrupt):
        scaler.run(duration)


@app.command("disable-auto-scale")
def disable_auto_scale(
    replicas: Annotated[int | None, typer.Option(callback=bounded(1), help=(
        "Stack: the replicas each class keeps once its HPA is gone (default: the highest HPA minimum today, "
        "so no class runs fewer pods than its floor)."))] = None,
    dry_run: DryRun = False, yes: Yes = False, allow_capacity_drop: AllowCapacityDrop = False,
) -> None:
    """Stack: remove the HPAs, pinning replicas.  Lab: stop a running autoscaler."""
    if state.stack:
        cfg = stack_ops.effective(state.stack)
        values: dict[str, Any] = {"autoscaling": False}
        note = ""
        if replicas is not None:
            values["replicas"] = replicas
        elif cfg["autoscaling"]:
            # One `replicas` serves every class: the highest floor keeps each
            # class at or above what its HPA guaranteed.
            floors = {f"{c}MinReplicas": cfg[f"{c}MinReplicas"] for c in naming.TRAFFIC_CLASSES}
            values["replicas"] = max(floors.values())
            note = (f"replicas {values['replicas']}: the highest HPA minimum today ("
                    + ", ".join(f"{k} {v}" for k, v in floors.items()) + "); --replicas N to choose")
        stack_change("disable-auto-scale", lambda _: values, dry_run, yes, allow_capacity_drop, note)
        return
    if replicas is not None:
        raise typer.BadParameter("pins a stack's replicas; the lab's instances are scale-up/scale-down's",
                                 param_hint="--replicas")
    resolve()
    if dry_run:
        out.print("would stop the lab autoscaler, if one runs")
        raise typer.Exit(OK)
    out.print("stopped the lab autoscaler" if autoscale.stop_running() else "no lab autoscaler runs")


