"""What every test folder shares: waiting for a state, a free port, and
running ansible-playbook with its outcome read as data.

Imported as `tests.kit` (the repository root is on pytest's pythonpath).
The lab's own helpers (node(), the load generator, run_playbook) are in
tests/lab/labkit.py and build on these.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Callable
from pathlib import Path

from automata_lb.playbook import Run
from automata_lb.playbook import run as playbook_run
from automata_lb.wait import until

ROOT = Path(__file__).resolve().parents[1]
PlaybookRun = Run  # each host's counts, first failure, changed tasks; the handlers that ran


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _described(predicate: Callable, what: str | None) -> str:
    """What a failed wait was waiting for: the caller's words, else the
    predicate's own source line (a lambda names its condition best)."""
    if what:
        return what
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return getattr(predicate, "__name__", repr(predicate))


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2,
               what: str | None = None) -> float:
    """Poll predicate() until it is truthy; return the seconds that took.

    Raises AssertionError naming what was awaited after `timeout` seconds.
    """
    start = time.monotonic()
    until(predicate, timeout, _described(predicate, what), interval=interval)
    return time.monotonic() - start


async def wait_until_async(predicate: Callable[[], object], timeout: float, interval: float = 0.02,
                           what: str | None = None) -> float:
    """wait_until for a test that runs its own event loop: the load it
    watches runs on that loop, so the wait must yield to it.  `predicate`
    may be a coroutine function."""
    start = time.monotonic()
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:g}s: {_described(predicate, what)}")
        await asyncio.sleep(interval)


def ansible_playbook(playbook: Path, inventory: Path, extra_vars: dict | None = None, *,
                     limit: str | None = None, args: list[str] | None = None, env: dict[str, str] | None = None,
                     timeout: float = 900) -> PlaybookRun:
    """Run ansible-playbook the way a user would, through the package's one
    runner (automata_lb/playbook.py): the outcome as data."""
    return playbook_run(playbook, inventory, extra_vars, limit=limit, args=args or (), env=env, timeout=timeout)
