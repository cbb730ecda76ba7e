"""Ansible callback: a playbook run as data (a JSON file named by
$AUTOMATA_RUN_RESULTS), so the CLI, the lab and the tests read each host's
counts, first failure, changed tasks and handlers instead of parsing text
meant for people.

automata_lb/playbook.py enables it for the runs it starts, and only those.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: run_results
type: aggregate
short_description: Write each host's counts, first failure and changed tasks to $AUTOMATA_RUN_RESULTS
description: Used by automata_lb/playbook.py to read a playbook run as data.
requirements: [enabled through ANSIBLE_CALLBACKS_ENABLED]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "run_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._failed: dict[str, dict] = {}
        self._changed_tasks: dict[str, list[str]] = {}
        self._handlers: list[str] = []

    def _fail(self, result, kind: str) -> None:
        # A loop fails as "One or more items failed": the failed items say why.
        items = [str(r.get("msg", "")) for r in result._result.get("results", []) if r.get("failed")]
        self._failed.setdefault(result._host.get_name(), {
            "kind": kind, "task": result._task.get_name(),
            "msg": "; ".join(items) if items else str(result._result.get("msg", "")),
        })

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        if not ignore_errors:
            self._fail(result, "failed")

    def v2_runner_on_unreachable(self, result) -> None:
        self._fail(result, "unreachable")

    def v2_runner_on_ok(self, result) -> None:
        if result._result.get("changed"):
            self._changed_tasks.setdefault(result._host.get_name(), []).append(result._task.get_name())

    def v2_playbook_on_handler_task_start(self, task) -> None:
        self._handlers.append(task.get_name())

    def v2_playbook_on_stats(self, stats) -> None:
        path = os.environ.get("AUTOMATA_RUN_RESULTS")
        if not path:
            return
        Path(path).write_text(json.dumps({
            "stats": {host: stats.summarize(host) for host in sorted(stats.processed)},
            "failed": self._failed,
            "changed_tasks": self._changed_tasks,
            "handlers": self._handlers,
        }, indent=2))
