"""What every test folder shares: waiting for a state, a free port, and
running ansible-playbook with its outcome read as data.

Imported as `tests.kit` (the repository root is on pytest's pythonpath).
The lab's own helpers (node(), the load generator, run_playbook) are in
tests/lab/labkit.py and build on these.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
# tests/callback_plugins/run_results.py: enabled only for the runs below.
CALLBACK_PLUGINS = Path(__file__).with_name("callback_plugins")
RESULTS_CALLBACK = "run_results"


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
    while not predicate():
        waited = time.monotonic() - start
        if waited > timeout:
            raise AssertionError(f"not within {timeout:g}s: {_described(predicate, what)}")
        time.sleep(interval)
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


@dataclass
class PlaybookRun:
    """One ansible-playbook run: `output` is what a person reads (for failure
    messages); the rest comes from the run_results callback's JSON."""

    rc: int
    output: str
    # Per host, Ansible's own counts: ok, changed, failures, unreachable, ...
    stats: dict[str, dict] = field(default_factory=dict)
    # Per host, its first failure: {"kind", "task", "msg"}.
    failed: dict[str, dict] = field(default_factory=dict)
    # Per host, the names ("role : task") of the tasks that reported a change.
    changed_tasks: dict[str, list[str]] = field(default_factory=dict)
    # Names of the handlers that ran, in order.
    handlers: list[str] = field(default_factory=list)


def ansible_playbook(playbook: Path, inventory: Path, extra_vars: dict | None = None, *,
                     limit: str | None = None, args: list[str] | None = None, env: dict[str, str] | None = None,
                     timeout: float = 900) -> PlaybookRun:
    """Run ansible-playbook from the repository root (its ansible.cfg) the way
    a user would, with the run_results callback added for this run only."""
    with tempfile.TemporaryDirectory(prefix="playbook-run-") as tmp:
        results = Path(tmp) / "results.json"
        cmd = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)]
        if extra_vars:
            vars_file = Path(tmp) / "extra.json"
            vars_file.write_text(json.dumps(extra_vars))
            cmd += ["-e", f"@{vars_file}"]
        if limit:
            cmd += ["--limit", limit]
        cmd += args or []
        run_env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
                   "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_PLUGINS), "ANSIBLE_CALLBACKS_ENABLED": RESULTS_CALLBACK,
                   "AUTOMATA_RUN_RESULTS": str(results), **(env or {})}
        proc = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout)
        data = json.loads(results.read_text()) if results.exists() else {}
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr, data.get("stats", {}), data.get("failed", {}),
                       data.get("changed_tasks", {}), data.get("handlers", []))
