"""What the CLI changed, when, and what it was before: the record `rollback`
restores from and `status` shows.

One JSON line per change in .automata-lb/history/<target>.jsonl under the
checkout (git-ignored), so it travels with neither the lab (which `make
down` deletes) nor a shared inventory.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from .targets import ROOT

DIR = ROOT / ".automata-lb" / "history"


def _path(target: str) -> Path:
    return DIR / (re.sub(r"[^A-Za-z0-9_.-]+", "_", target).strip("_") + ".jsonl")


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
