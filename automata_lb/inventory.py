"""The inventory as the source of truth: read and change its variables in
place (comments kept), then converge playbooks/edge.yml so the nodes agree.

A change the CLI makes is a change an operator could have typed into the
inventory: the next converge of the playbook reports changed=0.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from .targets import ROOT, TargetError
from .yamlio import plain, round_trip, set_top_level

PLAYBOOK = ROOT / "playbooks" / "edge.yml"
RENDER_PLAYBOOK = ROOT / "playbooks" / "render.yml"
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def var_file(inventory: Path, name: str) -> Path:
    """The group_vars file of the edge group that defines `name`."""
    directory = inventory if inventory.is_dir() else inventory.parent
    candidates = sorted((directory / "group_vars").glob("edge/*.yml")) + sorted((directory / "group_vars").glob("edge.yml"))
    for path in candidates:
        if re.search(rf"^{re.escape(name)}:", path.read_text(), re.M):
            return path
    if candidates:
        return candidates[0]
    raise TargetError(f"{directory}: no group_vars for group 'edge' to hold {name}")


def read(inventory: Path, name: str, default: Any = None) -> Any:
    doc = round_trip().load(var_file(inventory, name).read_text()) or {}
    return plain(doc.get(name, default))


def write(inventory: Path, values: dict[str, Any]) -> None:
    """Set top-level edge variables, keeping comments and layout: only each
    variable's own lines change (yamlio.set_top_level)."""
    for name, value in values.items():
        path = var_file(inventory, name)
        path.write_text(set_top_level(path.read_text(), name, value, _assign))


def _assign(container: Any, key: Any, value: Any) -> None:
    """container[key] = value, changing what exists in place so its comments,
    quotes and flow style stay where they were."""
    current = container.get(key) if isinstance(container, dict) else None
    if current == value:
        return
    if isinstance(current, CommentedMap) and isinstance(value, dict):
        # ruamel hangs the comments below a mapping on its deepest last entry;
        # they introduce what follows in the file, which yamlio.set_top_level
        # keeps from the original text.  Dropped here, they cannot travel
        # with an entry that moves or goes.
        _pop_trailing(current)
        for k in [k for k in current if k not in value]:
            del current[k]
        for k, v in value.items():
            if k in current:
                _assign(current, k, v)
            else:
                current[k] = v
    elif isinstance(current, CommentedSeq) and isinstance(value, list):
        _pop_trailing(current)
        flow = bool(current) and isinstance(current[0], CommentedMap) and current[0].fa.flow_style()
        kept = dict(enumerate(current))
        current.clear()
        for i, item in enumerate(value):
            current.append(kept[i] if i in kept and kept[i] == item else
                           _flow_map(item) if flow and isinstance(item, dict) else item)
    else:
        container[key] = value


def _pop_trailing(node: Any) -> Any:
    """Remove the comment that follows a mapping's or list's last entry."""
    if isinstance(node, CommentedMap) and len(node):
        last = list(node)[-1]
    elif isinstance(node, CommentedSeq) and len(node):
        last = len(node) - 1
    else:
        return None
    own = node.ca.items.get(last)
    if own and len(own) > 2 and own[2] is not None:
        token = own[2]
        own[2] = None
        return [None, None, token, None]
    return _pop_trailing(node[last])


def _flow_map(item: dict) -> CommentedMap:
    m = CommentedMap(item)
    m.fa.set_flow_style()
    return m


@dataclass(frozen=True)
class Converge:
    rc: int
    changed: dict[str, int]
    seconds: float
    output: str


def converge(inventory: Path, on_line: Callable[[str], None] | None = None,
             extra_args: list[str] | None = None) -> Converge:
    """ansible-playbook -i INVENTORY playbooks/edge.yml, as an operator runs it."""
    return run_playbook(inventory, PLAYBOOK, on_line, extra_args)


def render(inventory: Path, directory: Path, on_line: Callable[[str], None] | None = None) -> Converge:
    """playbooks/render.yml: what a converge would write on each edge node,
    rendered on this machine into directory/<node>/{nginx,haproxy}/."""
    return run_playbook(inventory, RENDER_PLAYBOOK, on_line, ["-e", json.dumps({"render_dir": str(directory)})])


def run_playbook(inventory: Path, playbook: Path, on_line: Callable[[str], None] | None = None,
                 extra_args: list[str] | None = None) -> Converge:
    ansible = Path(sys.executable).parent / "ansible-playbook"
    argv = [str(ansible if ansible.exists() else "ansible-playbook"), "-i", str(inventory), str(playbook),
            *(extra_args or [])]
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0"}
    started = time.monotonic()
    lines = []
    with subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            if on_line and line.startswith(("TASK [", "PLAY [")):
                on_line(line.strip(" *\n"))
    output = "".join(lines)
    changed = {m[1]: int(m[3]) for m in _RECAP.finditer(output)}
    return Converge(proc.returncode, changed, time.monotonic() - started, output)
