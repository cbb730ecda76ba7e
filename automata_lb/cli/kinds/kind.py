"""What every kind of target offers the commands, and the refusal of what
one kind cannot do.

A command parses and checks its own options, then calls one method of the
target it was given.  A kind that cannot do an operation keeps the
refusal below: exit 2 before anything is touched, naming the target and
saying where the operation lives instead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import typer

from ... import canary
from ...targets import Target
from ..base import USAGE, err


@dataclass
class AutoScale:
    """auto-scale's options; None where the user gave none."""
    min_replicas: int | None = None
    max_replicas: int | None = None
    cpu: int | None = None
    memory: int | None = None
    traffic_class: str | None = None
    target_inflight: float | None = None
    cooldown: float | None = None
    interval: float | None = None
    duration: float | None = None


@dataclass
class RolloutStart:
    """What a progressive canary needs from its target before it starts."""
    tier: canary.Tier
    prometheus_url: str | None
    prometheus_missing: str
    release: str | None                   # the release or image, checked
    canary_releases_before: dict


class Kind:
    """The lab, an inventory's edge VMs or a Pulumi stack.  `name` keys the
    target's records (history, rollout); `label` names it in messages."""

    name: str
    label: str
    production: bool = False

    def refuse(self, command: str, why: str) -> NoReturn:
        err.print(f"automata-lb: {command} on {self.label}: {why}")
        raise typer.Exit(USAGE)

    # --- reading -------------------------------------------------------------

    def edge(self, command: str) -> Target:
        """The edge nodes and backends status, health-check and metrics read."""
        self.refuse(command, "it has no edge nodes to read")

    def load_test(self, args: list[str]) -> int:
        """The Locust scenarios (python -m load_tests ARGS); their exit code."""
        self.refuse("load-test", "it has no edge to send load to")

    # --- changes -------------------------------------------------------------

    def scale(self, command: str, sign: int, count: int, to: bool, traffic_class: str | None,
              dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        self.refuse(command, "it has no instances to scale")

    def auto_scale(self, given: AutoScale, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        self.refuse("auto-scale", "it has no autoscaler")

    def disable_auto_scale(self, replicas: int | None, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        self.refuse("disable-auto-scale", "it has no autoscaler")

    def rolling_update(self, release: str, dry_run: bool, yes: bool) -> None:
        self.refuse("rolling-update", "it has no instances to update")

    def rollback(self, dry_run: bool, yes: bool, allow_capacity_drop: bool) -> None:
        self.refuse("rollback", "it keeps no record to go back to")

    def canary_hold(self, release: str, weight: int, dry_run: bool, yes: bool) -> None:
        """canary-deploy without --steps: RELEASE on the canary track at WEIGHT percent."""
        self.refuse("canary-deploy", "it has no canary track")

    # --- progressive canary ----------------------------------------------------

    def canary_tier(self) -> canary.Tier:
        """What a rollout moves: the weights and the canary instances."""
        self.refuse("canary-deploy", "it has no canary track")

    def rollout_start(self, release: str | None, prometheus: str | None) -> RolloutStart:
        self.refuse("canary-deploy", "it has no canary track")

    def rollout_plan(self, rollout: canary.Rollout) -> None:
        """Print what each step will change, beyond the weights (a dry run)."""

    def rollout_records(self, start: RolloutStart, rollout: canary.Rollout, resumed: bool) -> tuple[dict, dict]:
        """(before, after) for the history: what `rollback` goes back to."""
        return {"canary": rollout.canary_releases_before}, {"release": rollout.release}

    def abort_check(self) -> None:
        """Refuse canary-abort before it stops anything, where it could not finish."""
