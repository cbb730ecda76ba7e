"""automata-lb, the operations CLI, one module per command group:
reading (status, health-check, metrics, history, load-test), scaling,
releases (rolling-update, rollback) and rollouts (canary-deploy,
canary-status, canary-abort).  A command checks its options and calls its
target, one type per kind of target (kinds/: the lab, an inventory, a
stack).  What the change commands share is in changes.py; the app and the
options every command takes are in base.py."""

# Each module registers its commands; `--help` lists them in this order.
from . import reading, scaling, releases, rollouts  # noqa: F401
from .base import app
from .reading import render_status

__all__ = ["app", "render_status", "run"]


def run() -> None:
    app()
