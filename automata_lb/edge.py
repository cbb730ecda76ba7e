"""Read and change the edge load balancers of a target, over SSH.

Reads go through probe.py (one SSH round trip per node, run in parallel);
changes go through HAProxy's runtime API on each node.  Nothing here edits
files on a node: configuration changes are converges of playbooks/edge.yml.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .targets import EdgeNode, Target, TargetError

PROBE = Path(__file__).with_name("probe.py").read_text()
ADMIN_SOCKET = "/run/haproxy/admin.sock"


def probe(node: EdgeNode) -> dict:
    proc = node.run("python3", "-", stdin=PROBE)
    if proc.returncode != 0:
        return {"node": node.name, "reachable": False, "error": (proc.stderr or proc.stdout).strip()[-300:]}
    return {"reachable": True, **json.loads(proc.stdout), "node": node.name}


def probe_all(target: Target) -> list[dict]:
    with ThreadPoolExecutor(max_workers=max(1, len(target.edges))) as pool:
        return list(pool.map(probe, target.edges))


def runtime(node: EdgeNode, *commands: str) -> str:
    """HAProxy runtime API commands on one node; raises when any is refused."""
    script = "; ".join(commands)
    proc = node.run("socat", "-t", "5", "stdio", f"UNIX-CONNECT:{ADMIN_SOCKET}", stdin=script + "\n")
    out = proc.stdout.strip()
    if proc.returncode != 0:
        raise TargetError(f"{node.name}: runtime API: {proc.stderr.strip()}")
    for line in out.splitlines():
        if line.startswith(("Unknown command", "No such", "Invalid", "Require", "Permission denied")) \
                or "error" in line.lower():
            raise TargetError(f"{node.name}: runtime API refused `{script}`: {line}")
    return out
