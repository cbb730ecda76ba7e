"""The kinds of target the CLI acts on, one type each: the lab and an
inventory's edge VMs (edge.py), a Pulumi stack (stack.py), with what every
kind offers (kind.py).  Commands call the target resolve() gives them and
never ask which kind it is; resolve() is the one place that tells them
apart."""

from __future__ import annotations

from ...targets import inventory, lab
from ..base import state
from .edge import Inventory, Lab
from .kind import AutoScale, Kind, RolloutStart
from .stack import Stack

__all__ = ["AutoScale", "Kind", "RolloutStart", "resolve"]


def resolve() -> Kind:
    """The target the command line names, once per command."""
    if state.target is None:
        if state.stack:
            state.target = Stack(state.stack)
        elif state.inventory:
            path = state.inventory
            state.target = Inventory(lambda: inventory(path), str(path))
        else:
            state.target = Lab(lab)
    return state.target
