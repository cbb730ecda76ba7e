"""The one way this package runs ansible-playbook: the operations CLI, the
lab, the benchmark's renders and the tests all come through `run`.

A run starts from the checkout's root with its ansible.cfg, keeps the
output a person reads (and hands each line to `on_line` as it comes, for
progress), and reads the outcome as data: the run_results callback
(automata_lb/callback_plugins/) writes each host's counts, first failure,
changed tasks and the handlers that ran to a JSON file, so nothing parses
the recap meant for people.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALLBACK_PLUGINS = Path(__file__).with_name("callback_plugins")
RESULTS_CALLBACK = "run_results"


@dataclass(frozen=True)
class Run:
    """One ansible-playbook run."""

    rc: int
    output: str                      # what a person reads
    seconds: float = 0.0
    # Per host, Ansible's own counts: ok, changed, failures, unreachable, skipped, ...
    stats: dict[str, dict] = field(default_factory=dict)
    # Per host, its first failure: {"kind": "failed" | "unreachable", "task", "msg"}.
    failed: dict[str, dict] = field(default_factory=dict)
    # Per host, the names ("role : task") of the tasks that reported a change.
    changed_tasks: dict[str, list[str]] = field(default_factory=dict)
    # The handlers that ran, in order.
    handlers: list[str] = field(default_factory=list)

    @property
    def changed(self) -> dict[str, int]:
        """{host: tasks changed}."""
        return {host: s.get("changed", 0) for host, s in self.stats.items()}

    @property
    def failures(self) -> dict[str, int]:
        """{host: tasks failed or unreachable}."""
        return {host: s.get("failures", 0) + s.get("unreachable", 0) for host, s in self.stats.items()}


def executable(name: str) -> str:
    """An Ansible command from this interpreter's environment, else PATH's."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def run(playbook: Path, inventory: Path | str, extra_vars: dict | None = None, *, limit: str | None = None,
        args: list[str] | tuple[str, ...] = (), env: dict[str, str] | None = None, timeout: float | None = None,
        on_line: Callable[[str], None] | None = None) -> Run:
    """ansible-playbook -i INVENTORY PLAYBOOK, as an operator runs it.
    `extra_vars` go in as a JSON file (typed, never split on spaces);
    `args` are passed as given, after everything else."""
    with tempfile.TemporaryDirectory(prefix="automata-playbook-") as tmp:
        results = Path(tmp) / "results.json"
        argv = [executable("ansible-playbook"), "-i", str(inventory), str(playbook)]
        if extra_vars:
            vars_file = Path(tmp) / "extra-vars.json"
            vars_file.write_text(json.dumps(extra_vars))
            argv += ["-e", f"@{vars_file}"]
        if limit:
            argv += ["--limit", limit]
        argv += list(args)
        enabled = ",".join(filter(None, [os.environ.get("ANSIBLE_CALLBACKS_ENABLED"), RESULTS_CALLBACK]))
        run_env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                   "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_PLUGINS),
                   "ANSIBLE_CALLBACKS_ENABLED": enabled, "AUTOMATA_RUN_RESULTS": str(results), **(env or {})}
        started = time.monotonic()
        lines: list[str] = []
        with subprocess.Popen(argv, cwd=ROOT, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            # A run that outlives its timeout is killed; its output so far is kept.
            watchdog = threading.Timer(timeout, proc.kill) if timeout else None
            if watchdog:
                watchdog.start()
            try:
                for line in proc.stdout:
                    lines.append(line)
                    if on_line:
                        on_line(line.rstrip("\n"))
            finally:
                if watchdog:
                    watchdog.cancel()
        seconds = time.monotonic() - started
        data = json.loads(results.read_text()) if results.exists() else {}
    output = "".join(lines)
    if timeout and proc.returncode < 0 and seconds >= timeout:
        output += f"\n(killed: still running after {timeout:g}s)\n"
    return Run(proc.returncode, output, seconds, data.get("stats", {}), data.get("failed", {}),
               data.get("changed_tasks", {}), data.get("handlers", []))
