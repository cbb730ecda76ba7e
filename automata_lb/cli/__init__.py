"""automata-lb, the operations CLI, one module per command group:
reading (status, health-check, metrics, history, load-test), scaling,
releases (rolling-update, rollback) and rollouts (canary-deploy,
canary-status, canary-abort).  What the change commands share is in
changes.py; the app, the target and the options every command takes are
in base.py."""

# Each module registers its commands; `--help` lists them in this order.
from . import reading, scaling, releases, rollouts  # noqa: F401
from .base import app
from .reading import render_status

__all__ = ["app", "render_status", "run"]


def run() -> None:
    app()
