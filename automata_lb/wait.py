"""Waiting for a state: poll, return the first truthy value.  The one poller
of the CLI, the lab, the fault drill and the tests (tests/kit.py builds its
wait_until on it)."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(predicate: Callable[[], object], timeout: float, what: str, *, interval: float = 0.05,
          error: type[Exception] = AssertionError):
    """Poll predicate() until it is truthy and return that value; after
    `timeout` seconds raise `error` naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)
