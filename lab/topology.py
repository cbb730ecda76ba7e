"""The lab's fixed map: names, addresses and published ports (docs/lab.md).

Kept in one place so the lab, its inventory and the tests agree.  The
inventory in inventories/lab repeats the addresses because Ansible cannot
import Python; tests/lab/test_lab.py checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "automata-lab"
NETWORK = PREFIX
SUBNET = "10.77.7.0/24"
GATEWAY = "10.77.7.1"

BASE_IMAGE = f"localhost/{PREFIX}-base:bookworm"
NODE_IMAGE = f"localhost/{PREFIX}-node:latest"
BACKEND_IMAGE = f"localhost/{PREFIX}-backend:latest"
PROMETHEUS_IMAGE = f"localhost/{PREFIX}-prometheus:latest"

# Ports of the first edge node; edge-N publishes base + (N - 1).
EDGE_PORTS = {  # name: (published base, port inside the node)
    "nginx_http": (8080, 80),
    "nginx_https": (8443, 443),
    "haproxy_http": (8000, 8000),
    "haproxy_https": (9443, 9443),
    "haproxy_stats": (8404, 8404),
}
BACKEND_APP_PORT = 8000
BACKEND_ADMIN_PORT = 9000

# What the lab's Prometheus scrapes on every edge node: the ports of role
# edge_exporters' defaults and HAProxy's built-in exporter.
EDGE_EXPORTERS = {  # job: port
    "edge-node": 9100,
    "nginx": 9113,
    "nginx-log": 3903,
    "haproxy": 8404,
}
# The floating address in front of both edge nodes (roles/edge_vip): inside
# the lab subnet, outside every node's own address.  Tests reach it straight
# over the Podman bridge; published ports stay per node.
EDGE_VIP = "10.77.7.100"
EDGE_VIP_PREFIX = 24

PROMETHEUS_NAME = "prometheus"
PROMETHEUS_ADDRESS = "10.77.7.5"
PROMETHEUS_PORT = 9090  # published on 127.0.0.1 as the same port
# Short, so alerts and the dashboard follow a test within seconds.
SCRAPE_INTERVAL_SECONDS = 5


@dataclass(frozen=True)
class Edge:
    index: int  # 1-based

    @property
    def name(self) -> str:
        return f"edge-{self.index}"

    @property
    def address(self) -> str:
        return f"10.77.7.{10 + self.index}"

    @property
    def ports(self) -> dict[str, tuple[int, int]]:
        return {k: (base + self.index - 1, inner) for k, (base, inner) in EDGE_PORTS.items()}


@dataclass(frozen=True)
class Backend:
    name: str
    address: str
    index: int  # position in the published port map (app 9000+i, admin 9100+i)
    version: str = "stable"

    @property
    def app_port(self) -> int:
        return 9000 + self.index

    @property
    def admin_port(self) -> int:
        return 9100 + self.index


EDGES = [Edge(1), Edge(2)]
BACKENDS = [
    Backend("backend-1", "10.77.7.21", 1),
    Backend("backend-2", "10.77.7.22", 2),
    Backend("backend-3", "10.77.7.23", 3),
    Backend("canary-1", "10.77.7.31", 4, version="canary"),
]

# Scaling starts stable instances backend-1..9 at 10.77.7.21-29: the lab
# network's room for them.
STABLE_SLOTS = 9


def stable_slot(n: int) -> dict:
    """Stable instance n (1..STABLE_SLOTS) as the inventory lists it."""
    return {"name": f"backend-{n}", "address": f"10.77.7.{20 + n}", "port": BACKEND_APP_PORT}


def ai_pool() -> str:
    """AUTOMATA_AI_POOL of every lab backend: the stable backends, which
    answer /ai/..., called through the backend's client-side balancer from
    /api/ai/... (edge -> API -> AI).  The canary gets it too, since the edge
    sends it a share of /api/."""
    return ",".join(f"{b.address}:{BACKEND_APP_PORT}" for b in BACKENDS if b.version == "stable")


def mac_address(address: str) -> str:
    """A fixed MAC per lab address: a restarted container keeps its MAC, so
    peers' ARP caches stay valid instead of black-holing it for ~30 s."""
    return "02:4c:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))


def container_name(node: str) -> str:
    return f"{PREFIX}-{node}"

# Test client hosts (lab/netns.py): network namespaces plugged into the lab
# bridge, so a test can be a client with an address of its own instead of the
# gateway every published port arrives from (a trusted proxy, exempt from the
# per-peer limits).  No container is ever given one of these.
TEST_CLIENT_FIRST = 240
TEST_CLIENT_ADDRESSES = tuple(f"10.77.7.{n}" for n in range(TEST_CLIENT_FIRST, 250))
