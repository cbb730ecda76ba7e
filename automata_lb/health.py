"""Every health endpoint of every component, checked from where it matters.

Backends are checked from an edge node (the network path the load
balancers use), the edge nodes' own health on the node itself, Prometheus
from here.  One SSH round trip per node: the checks run as a small script
with the node's python3.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from . import edge
from .prom import Prometheus
from .targets import EdgeNode, Target

# Runs on the node (python3 - over SSH, CHECKS prepended): GET each URL,
# report status and time, never raise.  All at once: a stopped instance
# answers nothing, and its checks would otherwise wait out their timeouts
# one after another.
_CHECK = r"""
import json, sys, time, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
def check(item):
    name, url = item
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except Exception as e:
        status = 0
    return [name, url, status, round((time.monotonic() - start) * 1000, 1)]
with ThreadPoolExecutor(max(1, len(CHECKS))) as pool:
    json.dump(list(pool.map(check, CHECKS)), sys.stdout)
"""

BACKEND_PATHS = ("/health", "/healthz", "/health/detailed")


@dataclass(frozen=True)
class Check:
    component: str
    endpoint: str
    status: int
    ms: float
    expected: tuple[int, ...] = (200,)
    # Shown instead of the status where it is not an HTTP code (VRRP state).
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in self.expected

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _on_node(node: EdgeNode, checks: list[tuple[str, str]]) -> list[tuple[str, str, int, float]]:
    proc = node.run("python3", "-", stdin=f"CHECKS = {json.dumps(checks)}\n{_CHECK}")
    if proc.returncode != 0:
        return [(name, url, 0, 0.0) for name, url in checks]
    return [tuple(row) for row in json.loads(proc.stdout)]


def run(target: Target, haproxy_port: int = 8000, monitor_uri: str = "/lb-health",
        stats_port: int = 8404, stats_uri: str = "/haproxy-stats") -> list[Check]:
    """Every check, each node's SSH round trip and Prometheus's at once:
    the slowest check bounds the run, not their sum."""
    def own(node: EdgeNode) -> list[Check]:
        checks = [(f"{node.name} nginx", "http://127.0.0.1/health"),
                  (f"{node.name} haproxy", f"http://127.0.0.1:{haproxy_port}{monitor_uri}"),
                  # The stats listener is on the node's own address only (haproxy_lb_stats_bind_address).
                  (f"{node.name} stats page", f"http://{node.address}:{stats_port}{stats_uri}")]
        # The stats page must answer, and only to credentials: 401 is healthy.
        return [Check(name, url, status, ms, (401,) if name.endswith("stats page") else (200,))
                for name, url, status, ms in _on_node(node, checks)]

    def backends(via: EdgeNode) -> list[Check]:
        checks = [(b.name, f"http://{b.address}:{b.port}{path}") for b in target.backends for path in BACKEND_PATHS]
        return [Check(f"{name} (from {via.name})", url, status, ms) for name, url, status, ms in _on_node(via, checks)]

    def prometheus(url: str) -> list[Check]:
        started = time.monotonic()
        up = Prometheus(url).healthy()
        return [Check("prometheus", f"{url}/-/healthy", 200 if up else 0, round((time.monotonic() - started) * 1000, 1))]

    with ThreadPoolExecutor(max_workers=len(target.edges) + 3) as pool:
        parts = [pool.submit(own, node) for node in target.edges]
        parts.append(pool.submit(lambda: vrrp_checks(edge.probe_all(target))))
        if target.edges:
            # From an edge node: the network path the load balancers use.
            parts.append(pool.submit(backends, target.edges[0]))
        if target.prometheus_url:
            parts.append(pool.submit(prometheus, target.prometheus_url))
        return [check for part in parts for check in part.result()]


def floating_addresses(probes: list[dict]) -> dict[str, list[str]]:
    """{floating address: the nodes that hold it now}, from probe documents;
    empty where no node runs keepalived."""
    holders: dict[str, list[str]] = {}
    for p in probes:
        keepalived = p.get("keepalived") or {}
        for address in keepalived.get("addresses", []):
            holders.setdefault(address, [])
        for address in keepalived.get("holds", []):
            holders.setdefault(address, []).append(p["node"])
    return holders


def vrrp_checks(probes: list[dict]) -> list[Check]:
    """keepalived on every node that has floating addresses (MASTER or
    BACKUP is healthy), and each address held by exactly one node."""
    checks = []
    for p in probes:
        keepalived = p.get("keepalived") or {}
        if not keepalived.get("addresses"):
            continue
        state = keepalived.get("state") if keepalived.get("active") else "stopped"
        checks.append(Check(f"{p['node']} keepalived", "VRRP " + ", ".join(keepalived["addresses"]),
                            int(state in ("MASTER", "BACKUP")), 0.0, (1,), state or "no state"))
    for address, nodes in floating_addresses(probes).items():
        checks.append(Check(f"floating address {address}", "held by " + (", ".join(nodes) or "no node"),
                            len(nodes), 0.0, (1,), f"{len(nodes)} holder" + ("" if len(nodes) == 1 else "s")))
    return checks

