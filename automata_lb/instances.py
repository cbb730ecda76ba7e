"""Who starts and stops the backend instances the load balancers serve.

scale-up/down, rolling-update and canary-deploy change instances as well as
pools.  The pools are this tool's (both load balancers, the inventory); the
instances belong to whatever runs the application:

- the lab: containers on this machine (lab/stack.py);
- an inventory: the playbook it names in `automata_lb_instance_playbook`,
  run against that inventory with `-e automata_lb_instance={name, address,
  port, track, release, state}` (state `started`: return once the instance
  answers its health check; `stopped`: stop it gracefully).  Scale-up takes
  the next of `automata_lb_instance_spares`, the instances that playbook may
  start.  An inventory that names no playbook gets the changes that need
  none (the canary weight) and a refusal naming the variable for the rest.

What each instance runs is recorded with the target (targets.record_file),
so every operator of an inventory reads the same releases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from lab import stack as lab_stack, topology

from . import playbook
from .targets import Target, TargetError, record_file

PLAYBOOK_VARIABLE = "automata_lb_instance_playbook"
SPARES_VARIABLE = "automata_lb_instance_spares"
LAB_STABLE = topology.STABLE_SLOTS


class Instances(Protocol):
    def releases(self) -> dict[str, str]:
        """{instance: release} for those that run something other than their track's release."""

    def spares(self) -> list[dict]:
        """The instances scale-up may start, in the order it takes them."""

    def refusal(self) -> str | None:
        """Why instances cannot be started or stopped here; None when they can."""

    def start(self, entry: dict, track: str, release: str | None) -> None:
        """Start `entry` ({name, address, port}) and return once it is healthy."""

    def stop(self, entry: dict) -> None:
        """Stop one instance ({name, address, port}) gracefully."""

    def more_spares(self) -> str:
        """Where more instances for scale-up are declared ("" when nowhere)."""


class LabInstances:
    """The lab's backend containers."""

    def releases(self) -> dict[str, str]:
        return lab_stack.releases()

    def spares(self) -> list[dict]:
        return [topology.stable_slot(n) for n in range(1, LAB_STABLE + 1)]

    def refusal(self) -> str | None:
        return None

    def start(self, entry: dict, track: str, release: str | None) -> None:
        try:
            lab_stack.start_instance(entry["name"], entry["address"], track, release)
        except RuntimeError as exc:
            raise TargetError(str(exc)) from None

    def stop(self, entry: dict) -> None:
        lab_stack.stop_instance(entry["name"])

    def more_spares(self) -> str:
        return ""


class PlaybookInstances:
    """An inventory's instances, through the playbook it names."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.playbook: Path | None = target.instance_playbook
        self.record = record_file(target.name, "releases", "json")

    def releases(self) -> dict[str, str]:
        return json.loads(self.record.read_text()) if self.record.exists() else {}

    def _set_release(self, name: str, release: str | None) -> None:
        current = self.releases()
        if release is None:
            current.pop(name, None)
        else:
            current[name] = release
        self.record.parent.mkdir(parents=True, exist_ok=True)
        self.record.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")

    def spares(self) -> list[dict]:
        return [dict(s) for s in self.target.instance_spares]

    def more_spares(self) -> str:
        return f"declare more in {SPARES_VARIABLE}"

    def refusal(self) -> str | None:
        if self.playbook is None:
            return (f"{self.target.name} names no {PLAYBOOK_VARIABLE}: the playbook that starts and stops one "
                    "backend instance (docs/operations.md#backend-instances)")
        if not self.playbook.is_file():
            return f"{self.target.name}: {PLAYBOOK_VARIABLE} {self.playbook} is not a file"
        return None

    def _run(self, instance: dict) -> None:
        if why := self.refusal():
            raise TargetError(why)
        run = playbook.run(self.playbook, self.target.inventory, {"automata_lb_instance": instance})
        if run.rc != 0:
            first = next(iter(run.failed.values()), {})
            raise TargetError(f"{self.playbook.name} could not make {instance['name']} {instance['state']}: "
                              f"{first.get('task', '')}: {first.get('msg') or run.output[-500:]}")

    def start(self, entry: dict, track: str, release: str | None) -> None:
        self._run({"name": entry["name"], "address": entry["address"], "port": int(entry["port"]),
                   "track": track, "release": release or track, "state": "started"})
        self._set_release(entry["name"], None if release in (None, track) else release)

    def stop(self, entry: dict) -> None:
        self._run({"name": entry["name"], "address": entry["address"], "port": int(entry["port"]),
                   "state": "stopped"})
        self._set_release(entry["name"], None)


def of(target: Target) -> Instances:
    """The one place that tells the lab's instances from an inventory's."""
    return LabInstances() if target.kind == "lab" else PlaybookInstances(target)
