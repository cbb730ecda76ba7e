"""The inventory as the source of truth: read and change its variables in
place (comments kept), then converge playbooks/edge.yml so the nodes agree.

A change the CLI makes is a change an operator could have typed into the
inventory: the next converge of the playbook reports changed=0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from . import playbook
from .targets import ROOT, edge_var, edge_var_file
from .yamlio import set_top_level

# Where an edge variable is set, and its value: targets reads them too.
var_file, read = edge_var_file, edge_var

RENDER_PLAYBOOK = ROOT / "playbooks" / "render.yml"


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


def render(inventory: Path, directory: Path) -> playbook.Run:
    """playbooks/render.yml: what a converge would write on each edge node,
    rendered on this machine into directory/<node>/{nginx,haproxy}/."""
    return playbook.run(RENDER_PLAYBOOK, inventory, {"render_dir": str(directory)})
