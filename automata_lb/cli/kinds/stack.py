"""A Pulumi stack (--stack NAME): every change is a change of its config
file (stacks/Pulumi.NAME.yaml), planned on the objects the program renders,
then applied with `pulumi up` where a Pulumi CLI is found."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from infra import naming
from infra.settings import ConfigError

from ... import history
from ... import stack as stack_ops
from ...targets import Target
from ..base import FAILED, OK, USAGE, err, out
from ..changes import checked_image, confirm, say
from .kind import AutoScale, Kind, RolloutStart


def _traffic_class(value: str | None) -> str:
    value = value or "api"
    if value not in naming.TRAFFIC_CLASSES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(naming.TRAFFIC_CLASSES)}", param_hint="--class")
    return value


class Stack(Kind):
    def __init__(self, stack: str) -> None:
        self.stack = stack
        self.name = f"stack-{stack}"
        self.label = f"stack {stack}"
        self.production = stack_ops.protected(stack)

    def edge(self, command: str) -> Target:
        self.refuse(command, "a stack's load balancers are the mesh in its cluster; read them there "
                             "(kubectl, the load-balancer dashboard), or give --inventory for edge VMs")

    def load_test(self, args: list[str]) -> int:
        self.refuse("load-test", "load-test drives an edge (the lab or a URL); run it against the stack's "
                                 "gateway from a machine that reaches it")

    def change(self, command: str, values_of: Callable[[dict], dict], dry_run: bool, yes: bool,
               allow_capacity_drop: bool = False, note: str = "") -> None:
        """Plan `values_of(effective config)`, print it and its object diff, then
        (unless --dry-run) confirm on a protected stack, write and apply.  Only
        the keys `values_of` returns change: commands leave out what the user
        did not give.  A change that lowers a protected stack's capacity is
        refused (exit 2, dry run included) without --allow-capacity-drop."""
        name = self.stack
        values = values_of(stack_ops.effective(name))
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
        if change.drops and self.production and not allow_capacity_drop:
            err.print(f"automata-lb: refused: {command} lowers the capacity of protected stack {name}: "
                      + "; ".join(change.drops) + ". Give --allow-capacity-drop to go ahead.")
            raise typer.Exit(USAGE)
        for line in change.drops:
            out.print(f"  lowers capacity: {line}", soft_wrap=True, markup=False, highlight=False)
        if dry_run or change.empty:
            raise typer.Exit(OK)
        confirm(self.production, f"{command} (stack {name})", yes)
        stack_ops.write(name, change.values)
        history.record(self.name, command, change.before, change.values, outcome="written")
        applied, cmd = stack_ops.apply(name)
        if applied:
            out.print(f"applied: {cmd}")
        else:
            out.print(f"stacks/Pulumi.{name}.yaml updated; apply it with:\n  {cmd}")

    # --- changes -------------------------------------------------------------

    def scale(self, command: str, sign: int, count: int, to: bool, traffic_class: str | None,
              dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        chosen = _traffic_class(traffic_class)

        def values(cfg: dict) -> dict:
            key = f"{chosen}MinReplicas" if cfg["autoscaling"] else "replicas"
            have = cfg[key]
            wanted = count if to else have + sign * count
            if wanted < 1:
                raise typer.BadParameter(f"{key} would become {wanted}; at least 1 must run", param_hint="COUNT")
            if sign * (wanted - have) < 0:  # --to the other way, as the lab refuses it
                other = "scale-down" if sign > 0 else "scale-up"
                raise typer.BadParameter(f"{key} is {have} today; {command} --to {count} would go the other way "
                                         f"(that is `{other} {count} --to`)", param_hint="COUNT")
            return {key: wanted}

        self.change(command, values, dry_run, yes, allow_capacity_drop)

    def auto_scale(self, given: AutoScale, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        lab_only = [flag for flag, value in (("--target-inflight", given.target_inflight),
                                             ("--cooldown", given.cooldown), ("--interval", given.interval),
                                             ("--duration", given.duration)) if value is not None]
        if lab_only:
            raise typer.BadParameter("drives the lab autoscaler; a stack's HPAs take their pace from the "
                                     "scaleUp*/scaleDown* keys of its config", param_hint=lab_only[0])
        chosen = _traffic_class(given.traffic_class)
        low_key, high_key = f"{chosen}MinReplicas", f"{chosen}MaxReplicas"

        def values(cfg: dict) -> dict:
            low = cfg[low_key] if given.min_replicas is None else given.min_replicas
            high = cfg[high_key] if given.max_replicas is None else given.max_replicas
            if low > high:
                raise typer.BadParameter(
                    f"need --min-replicas ({low}{'' if given.min_replicas is not None else f', {low_key} today'}) "
                    f"<= --max-replicas ({high}{'' if given.max_replicas is not None else f', {high_key} today'})",
                    param_hint="--min-replicas" if given.min_replicas is not None else "--max-replicas")
            wanted = {"autoscaling": True, low_key: given.min_replicas, high_key: given.max_replicas,
                      "cpuTarget": given.cpu, "memoryTarget": given.memory}
            return {key: value for key, value in wanted.items() if value is not None}

        self.change("auto-scale", values, dry_run, yes, allow_capacity_drop)

    def disable_auto_scale(self, replicas: int | None, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        cfg = stack_ops.effective(self.stack)
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
        self.change("disable-auto-scale", lambda _: values, dry_run, yes, allow_capacity_drop, note)

    def rolling_update(self, release: str, dry_run: bool, yes: bool) -> None:
        image = checked_image(release, "RELEASE")
        self.change("rolling-update", lambda cfg: {"image": image}, dry_run, yes)

    def rollback(self, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        entry = history.last_change(self.name)
        if not entry:
            err.print(f"automata-lb: nothing to roll back on stack {self.stack}")
            raise typer.Exit(FAILED)
        self.change("rollback", lambda cfg: entry["before"], dry_run, yes, allow_capacity_drop)

    def canary_hold(self, release: str, weight: int, dry_run: bool, yes: bool) -> None:
        image = checked_image(release, "RELEASE")
        self.change("canary-deploy", lambda cfg: stack_ops.canary_values(image, weight), dry_run, yes)

    # --- progressive canary ----------------------------------------------------

    def canary_tier(self) -> stack_ops.StackCanary:
        return stack_ops.StackCanary(self.stack, say)

    def rollout_start(self, release: str | None, prometheus: str | None) -> RolloutStart:
        return RolloutStart(self.canary_tier(), prometheus, "give --prometheus URL",
                            checked_image(release, "RELEASE") if release else None,
                            {"canaryImage": stack_ops.effective(self.stack).get("canaryImage")})

    def rollout_plan(self, rollout) -> None:
        for weight in rollout.steps:
            try:
                change = stack_ops.plan(self.stack, stack_ops.canary_values(rollout.release, weight))
            except ConfigError as exc:
                err.print(f"automata-lb: refused: {exc}")
                raise typer.Exit(USAGE) from None
            out.print(f"  step {weight}%: then `{' '.join(stack_ops.pulumi_up_command(self.stack))}`", highlight=False)
            for line in change.diff or ["no object changes"]:
                out.print(f"    {line}", soft_wrap=True, markup=False, highlight=False)
