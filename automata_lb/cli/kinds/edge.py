"""Edge VMs: the lab (the default target) and an inventory (--inventory
PATH).  Both run NGINX and HAProxy on their edge nodes; every change is a
desired state of their backends (backend_changes.BackendState) reconciled
onto the pools and instances.  They differ in who starts an instance
(instances.of) and in the autoscaler, which runs for the lab alone."""

from __future__ import annotations

import contextlib
import copy
import functools
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime

import typer

from ... import autoscale, backend_changes, edge, history, instances
from ...backend_changes import BackendState
from ...prom import Prometheus
from ...targets import ROOT, Target, TargetError
from ..base import FAILED, OK, UNREACHABLE, err, out
from ..changes import confirm, release_name, say
from .kind import AutoScale, Kind, RolloutStart

NO_AUTOSCALER = ("the autoscaler runs for the lab; an inventory's VMs scale with scale-up/scale-down, "
                 "a stack's pods with its HPAs (--stack)")
# The lab autoscaler's settings when not given.  A stack has no such
# defaults: what auto-scale is not told stays as the stack has it.
LAB_AUTOSCALE = {"min_replicas": 2, "max_replicas": 6, "target_inflight": 20.0, "cooldown": 60.0, "interval": 5.0}


def plan(before: BackendState, after: BackendState) -> list[str]:
    """One line per step of the change from `before` to `after`."""
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


class Edge(Kind):
    """Its edge is read when a command first needs it: a command that can
    do without (load-test against a URL) works with the lab down."""

    def __init__(self, load: Callable[[], Target]) -> None:
        self._load = load

    @functools.cached_property
    def target(self) -> Target:
        try:
            return self._load()
        except TargetError as exc:
            err.print(f"automata-lb: {exc}")
            raise typer.Exit(UNREACHABLE) from None

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def production(self) -> bool:
        return self.target.production

    @functools.cached_property
    def instances(self) -> instances.Instances:
        return instances.of(self.target)

    def edge(self, command: str) -> Target:
        return self.target

    def load_test(self, args: list[str]) -> int:
        return subprocess.run([sys.executable, "-m", "load_tests", *args], cwd=ROOT).returncode

    def change(self, command: str, desired_of: Callable[[BackendState], BackendState], dry_run: bool, yes: bool,
               details: dict) -> None:
        """Plan `desired_of(what runs)`, refuse what cannot be done here before
        anything changes, print the plan, then (unless --dry-run) reconcile."""
        target = self.target
        before = backend_changes.current(target)
        try:
            desired = desired_of(copy.deepcopy(before))
            why = backend_changes.refusal(target, before, desired)
        except backend_changes.NoSpare as exc:
            if not (why := self.instances.refusal()):
                more = self.instances.more_spares()
                raise typer.BadParameter(f"{target.name}: {exc}" + (f" ({more})" if more else ""),
                                         param_hint="COUNT") from None
        if why:
            self.refuse(command, f"it starts or stops instances: {why}")
        steps = plan(before, desired)
        out.print(f"[bold]{command}[/] on {target.name}:")
        for line in steps or ["nothing to change"]:
            out.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)
        if dry_run or not steps:
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

    # --- changes -------------------------------------------------------------

    def scale(self, command: str, sign: int, count: int, to: bool, traffic_class: str | None,
              dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        if traffic_class is not None:
            raise typer.BadParameter(f"scales a stack's class; the stable instances of {self.label} serve every "
                                     "class", param_hint="--class")

        def desired(state: BackendState) -> BackendState:
            have = len(state.backends)
            wanted = count if to else have + sign * count
            if wanted < 1:
                raise typer.BadParameter(f"{have} stable instances run; {wanted} would leave none", param_hint="COUNT")
            if (sign > 0 and wanted < have) or (sign < 0 and wanted > have):
                raise typer.BadParameter(f"{have} run already; --to {count} would go the other way", param_hint="COUNT")
            return backend_changes.with_stable_count(state, wanted, self.instances.spares())

        self.change(command, desired, dry_run, yes, {"count": count, "to": to})

    def rolling_update(self, release: str, dry_run: bool, yes: bool) -> None:
        name = release_name(release, "RELEASE")

        def desired(state: BackendState) -> BackendState:
            for b in state.backends:
                state.releases[b["name"]] = name
            return state

        self.change("rolling-update", desired, dry_run, yes, {"release": name})

    def rollback(self, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        target = self.target
        entry = history.last_change(target.name)
        if not entry:
            err.print(f"automata-lb: nothing to roll back on {target.name}")
            raise typer.Exit(FAILED)
        if set(entry["before"]) == {"canary_share"}:  # the share alone: nobody to deploy a release
            share = entry["before"]["canary_share"]
            out.print(f"rolling back `{entry['command']}`: canary share -> {share}% on every node")
            if dry_run or share is None:
                raise typer.Exit(OK)
            confirm(target.production, "rollback", yes)
            self.canary_tier().set_weight(share)
            history.record(target.name, "rollback", entry["after"], entry["before"], outcome="done",
                           undoes=entry["command"])
            return
        if set(entry["before"]) != set(BackendState.__dataclass_fields__):
            err.print(f"automata-lb: the last change on {target.name}, `{entry['command']}`, recorded no state to go "
                      "back to (it ended a rollout); `history` shows what ran")
            raise typer.Exit(FAILED)
        out.print(f"rolling back `{entry['command']}` of {datetime.fromtimestamp(entry['time']):%Y-%m-%d %H:%M:%S}")
        self.change("rollback", lambda _: BackendState.from_dict(entry["before"]), dry_run, yes,
                    {"undoes": entry["command"]})

    def canary_hold(self, release: str, weight: int, dry_run: bool, yes: bool) -> None:
        name = release_name(release, "RELEASE")
        if self.instances.refusal():   # nobody to deploy it: the share alone
            self._share_only(name, weight, dry_run, yes)
            return

        def desired(state: BackendState) -> BackendState:
            if not state.canary_backends:
                raise typer.BadParameter("the inventory has no edge_canary_backends to run a canary on",
                                         param_hint="RELEASE")
            for b in state.canary_backends:
                state.releases[b["name"]] = name
            state.canary_share = weight
            return state

        self.change("canary-deploy", desired, dry_run, yes, {"release": name, "weight": weight})

    def _share_only(self, release: str, share: int, dry_run: bool, yes: bool) -> None:
        """Edge VMs whose inventory names no instance playbook: the canary
        instances are deployed by the release process; this sends them SHARE
        percent once they answer as RELEASE."""
        target = self.target
        canaries = [b for b in target.backends if b.version == "canary"]
        if not canaries:
            raise typer.BadParameter(f"{target.name} has no edge_canary_backends to send traffic to",
                                     param_hint="RELEASE")
        before = next((n["haproxy"].get("canary_share") for n in edge.probe_all(target) if n.get("reachable")), None)
        out.print(f"[bold]canary-deploy[/] {release} on {target.name}: canary share {before}% -> {share}% on NGINX "
                  f"(checked, reloaded) and HAProxy (runtime API) of {len(target.edges)} node(s), and in the "
                  f"inventory; first checks that {', '.join(b.name for b in canaries)} answer as {release}",
                  soft_wrap=True, highlight=False)
        if dry_run:
            raise typer.Exit(OK)
        versions = edge.backend_versions(target, [{"name": b.name, "address": b.address, "port": b.port}
                                                  for b in canaries])
        wrong = {n: v for n, v in versions.items() if v != release}
        if wrong:
            err.print(f"automata-lb: refused: the canary instances do not run {release}: "
                      + ", ".join(f"{n} answers {v!r}" for n, v in wrong.items()) + "; deploy it there first")
            raise typer.Exit(FAILED)
        confirm(target.production, f"canary-deploy {release} at {share}%", yes)
        try:
            self.canary_tier().set_weight(share)
        except TargetError as exc:
            err.print(f"automata-lb: canary-deploy stopped: {exc}")
            raise typer.Exit(FAILED) from None
        history.record(target.name, "canary-deploy", {"canary_share": before}, {"canary_share": share},
                       outcome="done", release=release)
        out.print(f"canary {release} takes {share}% of canary-class traffic on every node")

    # --- progressive canary ----------------------------------------------------

    def canary_tier(self) -> backend_changes.EdgeCanary:
        return backend_changes.EdgeCanary(self.target, say)

    def _instances_needed(self, command: str, what: str) -> None:
        if why := self.instances.refusal():
            self.refuse(command, f"{what}: {why}")

    def rollout_start(self, release: str | None, prometheus: str | None) -> RolloutStart:
        self._instances_needed("canary-deploy", "a progressive canary deploys the release onto the canary instances")
        self.before = backend_changes.current(self.target)
        if not self.before.canary_backends:
            raise typer.BadParameter(f"{self.target.name} has no edge_canary_backends to run a canary on",
                                     param_hint="RELEASE")
        return RolloutStart(self.canary_tier(), prometheus or self.target.prometheus_url,
                            self.target.prometheus_missing, release_name(release, "RELEASE") if release else None,
                            {b["name"]: self.before.release(b["name"]) for b in self.before.canary_backends})

    def rollout_records(self, start: RolloutStart, rollout, resumed: bool) -> tuple[dict, dict]:
        # What `rollback` reconciles back to: the state the rollout began
        # from (its canary instances' releases as recorded when it began).
        after = backend_changes.current(self.target).as_dict()
        before = self.before.as_dict() | {"releases": {
            **{k: v for k, v in self.before.releases.items() if k not in rollout.canary_releases_before},
            **{k: v for k, v in rollout.canary_releases_before.items() if v != "canary"}}}
        if resumed:
            before["canary_share"] = after["canary_share"]
        return before, after

    def abort_check(self) -> None:
        self._instances_needed("canary-abort", "it puts the canary instances back")


class Lab(Edge):
    label = "the lab"

    def auto_scale(self, given: AutoScale, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        stack_only = [flag for flag, value in (("--cpu-threshold", given.cpu), ("--memory-threshold", given.memory),
                                               ("--class", given.traffic_class)) if value is not None]
        if stack_only:
            raise typer.BadParameter("sets a stack's HPAs; the lab autoscaler scales on connections in flight "
                                     "(--target-inflight)", param_hint=stack_only[0])
        chosen = {name: LAB_AUTOSCALE[name] if getattr(given, name) is None else getattr(given, name)
                  for name in LAB_AUTOSCALE}
        low, high = chosen["min_replicas"], chosen["max_replicas"]
        if low > high:
            raise typer.BadParameter(f"need --min-replicas ({low}) <= --max-replicas ({high})",
                                     param_hint="--min-replicas")
        if high > instances.LAB_STABLE:
            raise typer.BadParameter(f"the lab holds at most {instances.LAB_STABLE} stable instances",
                                     param_hint="--max-replicas")
        target = self.target
        if not target.prometheus_url:
            err.print(f"automata-lb: the autoscaler reads Prometheus; {target.prometheus_missing}")
            raise typer.Exit(UNREACHABLE)
        policy = autoscale.Policy(low, high, chosen["target_inflight"], chosen["cooldown"], chosen["interval"])
        out.print(f"autoscaling the lab's stable instances between {low} and {high} at "
                  f"{policy.target_inflight:g} in flight each (cool-down {policy.cooldown_s:g}s); "
                  f"query: {autoscale.INFLIGHT}")
        if dry_run:
            raise typer.Exit(OK)

        def scale_to(n: int) -> None:
            before = backend_changes.current(target)
            desired = backend_changes.with_stable_count(copy.deepcopy(before), n, self.instances.spares())
            say(f"scaling to {n}")
            backend_changes.reconcile(target, desired, say=say)
            history.record(target.name, "auto-scale", before.as_dict(), desired.as_dict(), outcome="done", replicas=n)

        scaler = autoscale.Autoscaler(Prometheus(target.prometheus_url), policy,
                                      replicas=lambda: len(backend_changes.current(target).backends),
                                      scale_to=scale_to, say=say)
        with contextlib.suppress(KeyboardInterrupt):
            scaler.run(given.duration)

    def disable_auto_scale(self, replicas: int | None, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        if replicas is not None:
            raise typer.BadParameter("pins a stack's replicas; the lab's instances are scale-up/scale-down's",
                                     param_hint="--replicas")
        if dry_run:
            out.print("would stop the lab autoscaler, if one runs")
            raise typer.Exit(OK)
        out.print("stopped the lab autoscaler" if autoscale.stop_running() else "no lab autoscaler runs")


class Inventory(Edge):
    def __init__(self, load: Callable[[], Target], path: str) -> None:
        super().__init__(load)
        self.label = f"inventory {path}"

    def auto_scale(self, given: AutoScale, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        self.refuse("auto-scale", NO_AUTOSCALER)

    def disable_auto_scale(self, replicas: int | None, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        self.refuse("disable-auto-scale", NO_AUTOSCALER)
