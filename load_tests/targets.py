"""Where the load goes: a load balancer of the lab, by name, or any URL.

The lab describes itself in .lab/lab.json; nothing here hard-codes a port.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
LAB_JSON = ROOT / ".lab" / "lab.json"

# Lab target name -> the endpoint of lab.json it means.  TLS on both, so
# the two balancers are compared doing the same work.
LAB_ENDPOINTS = {"nginx": "nginx_https", "haproxy": "haproxy_https"}


class TargetError(ValueError):
    """A target that cannot be resolved; the message names the argument."""


@dataclass(frozen=True)
class Target:
    name: str   # "nginx", "haproxy" or the URL itself
    url: str    # scheme://host:port, no path


def load_lab(path: Path = LAB_JSON) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def lab_ca_cert(lab: dict | None) -> str | None:
    """The lab's throwaway CA, so lab endpoints verify like real ones."""
    if not lab:
        return None
    ca = Path(lab["credentials"]["ca_cert"])
    return str(ca) if ca.exists() else None


def resolve(spec: str, *, edge: str = "edge-1", lab: dict | None = None) -> list[Target]:
    """`nginx`, `haproxy`, a URL, or several of them separated by commas
    (users are spread over them in turn)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise TargetError("--target: empty; use nginx, haproxy or a URL (several: comma-separated)")
    targets = []
    for part in parts:
        if part in LAB_ENDPOINTS:
            if lab is None:
                raise TargetError(f"--target {part}: {LAB_JSON} is missing; bring the lab up "
                                  f"(`make lab`) or give a URL")
            node = next((e for e in lab["edges"] if e["name"] == edge), None)
            if node is None:
                names = ", ".join(e["name"] for e in lab["edges"])
                raise TargetError(f"--edge {edge}: no such edge node in the lab (have: {names})")
            targets.append(Target(part, node["endpoints"][LAB_ENDPOINTS[part]]))
            continue
        url = urlsplit(part)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise TargetError(f"--target {part!r}: not nginx, haproxy or an http(s):// URL")
        if url.path not in ("", "/"):
            raise TargetError(f"--target {part!r}: give the origin only (scheme://host:port), "
                              f"the scenarios choose the paths")
        targets.append(Target(part, f"{url.scheme}://{url.netloc}"))
    return targets


def stable_instances(lab: dict | None) -> list[str]:
    return [b["name"] for b in (lab or {}).get("backends", []) if b["version"] == "stable"]
