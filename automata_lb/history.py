"""What the CLI changed, when, and what it was before: the record `rollback`
restores from and `status` shows.

One JSON line per change, in the target's history.jsonl, kept with the
target (targets.record_file): the lab's under .lab/, an inventory's beside
it, so every operator of an inventory reads and rolls back the same
changes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .targets import record_file


def _path(target: str) -> Path:
    return record_file(target, "history", "jsonl")


def record(target: str, command: str, before: dict, after: dict, **details) -> dict:
    entry = {"time": time.time(), "target": target, "command": command, "before": before, "after": after,
             **details}
    path = _path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry, default=str) + "\n")
    return entry


def entries(target: str) -> list[dict]:
    path = _path(target)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_change(target: str) -> dict | None:
    """The newest change not yet rolled back (a rollback undoes the one before it)."""
    undone = 0
    for entry in reversed(entries(target)):
        if entry["command"] == "rollback":
            undone += 1
        elif undone:
            undone -= 1
        else:
            return entry
    return None
