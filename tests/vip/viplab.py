"""A two-node VRRP lab of its own for the failover experiment
(test_vip_failover.py, opt-in with AUTOMATA_VIP_LAB=1; docs/edge-ha.md).

Two edge nodes from the lab's node image and one backend from its backend
image, on a Podman network of their own, converged with the whole
playbooks/edge.yml over SSH as the lab is.  Nothing here touches the shared
lab's containers or network (`automata-lab`, 10.77.7.0/24): names start with
AUTOMATA_VIP_PREFIX (default automata-vip) and the subnet is
AUTOMATA_VIP_SUBNET (default 10.78.9.0/24).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

from lab import images, topology, vip
from automata_lb.wait import until
from lab.podman import exists, podman
from vipkit import PLAYBOOK, Run, run, write_inventory

PREFIX = os.environ.get("AUTOMATA_VIP_PREFIX", "automata-vip")
SUBNET = ipaddress.IPv4Network(os.environ.get("AUTOMATA_VIP_SUBNET", "10.78.9.0/24"))
NETWORK = f"{PREFIX}-net"
LABEL = f"{PREFIX}=1"
GATEWAY = str(SUBNET[1])
EDGES = {"edge-1": str(SUBNET[11]), "edge-2": str(SUBNET[12])}
BACKEND = ("backend-1", str(SUBNET[21]))
VIP = str(SUBNET[100])
# What VRRP needs beyond the lab's SYS_ADMIN (measured, docs/edge-ha.md):
# NET_ADMIN to add and remove the address, NET_RAW for the VRRP and
# gratuitous-ARP sockets (in Podman 4.3's default set, but not in every
# runtime's, so asked for by name).
EDGE_CAPS = "SYS_ADMIN,NET_ADMIN,NET_RAW"


def container(node: str) -> str:
    return f"{PREFIX}-{node}"


def wait_until(predicate, timeout: float, what: str = "condition"):
    """Poll every 50 ms until predicate() is truthy; return its value."""
    return until(predicate, timeout, what)


def sh(node: str, command: str, check: bool = True) -> str:
    """Run a shell command on a node (podman exec: the measurements must not
    wait for SSH)."""
    return podman("exec", container(node), "sh", "-c", command, check=check).stdout


def now() -> float:
    return time.time()


def node(name: str) -> vip.Node:
    return vip.Node(name, container(name), VIP)


def prober(port: int, path: str) -> vip.Prober:
    return vip.Prober(VIP, port, path)


class VipLab:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.key = state_dir / "id_ed25519"
        self.auth_pass = secrets.token_urlsafe(6)
        self.stats_password = secrets.token_urlsafe(18)
        self.nodes = {name: node(name) for name in EDGES}

    # --- lifecycle ---------------------------------------------------------------
    def up(self, reuse: bool = False) -> None:
        """Start the pair from nothing; with `reuse`, keep a running pair an
        earlier run left (AUTOMATA_VIP_KEEP=1) and its key."""
        if exists("network", "automata-lab") and any(
                ipaddress.IPv4Network(s) == SUBNET for s in self._lab_subnets()):
            raise RuntimeError(f"{SUBNET} is the shared lab's subnet: set AUTOMATA_VIP_SUBNET")
        if reuse and self.key.exists() and self._running():
            return
        self.down()  # what an interrupted earlier run left
        self.key.unlink(missing_ok=True)
        Path(f"{self.key}.pub").unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", PREFIX, "-f", str(self.key)],
                       check=True)
        node_image, backend_image = images.ensure_node(), images.ensure_backend()
        if not exists("network", NETWORK):
            podman("network", "create", "--label", LABEL, "--subnet", str(SUBNET), "--gateway", GATEWAY, NETWORK)
        for name, address in EDGES.items():
            podman("run", "-d", "--name", container(name), "--label", LABEL, "--hostname", name,
                   "--network", NETWORK, "--ip", address, "--mac-address", topology.mac_address(address),
                   "--systemd=always", "--cap-add", EDGE_CAPS,
                   "-v", f"{self.key}.pub:/root/.ssh/authorized_keys:ro", node_image, "/sbin/init")
        name, address = BACKEND
        podman("run", "-d", "--name", container(name), "--label", LABEL, "--hostname", name,
               "--network", NETWORK, "--ip", address, "--mac-address", topology.mac_address(address),
               backend_image, "--instance", name, "--version", "stable", "--host", "0.0.0.0",
               "--port", "8000", "--admin-host", "0.0.0.0", "--admin-port", "9000")
        for address in [*EDGES.values(), BACKEND[1]]:
            port = 8000 if address == BACKEND[1] else 22
            until(functools.partial(_listening, address, port), 60, f"{address}:{port}", interval=0.2)

    def down(self) -> None:
        names = podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}").stdout.split()
        for name in names:
            podman("rm", "-f", "-t", "2", name, check=False)
        if exists("network", NETWORK):
            podman("network", "rm", NETWORK, check=False)

    def _running(self) -> bool:
        names = podman("ps", "--filter", f"label={LABEL}", "--format", "{{.Names}}").stdout.split()
        return set(names) == {container(n) for n in [*EDGES, BACKEND[0]]}

    @staticmethod
    def _lab_subnets() -> list[str]:
        out = podman("network", "inspect", "automata-lab", "--format",
                     "{{range .Subnets}}{{.Subnet}} {{end}}", check=False).stdout
        return out.split()

    # --- Ansible ------------------------------------------------------------------
    def inventory(self, extra: dict | None = None) -> Path:
        backend = [{"name": BACKEND[0], "address": BACKEND[1], "port": 8000}]
        return write_inventory(self.dir / "inventory", {
            "ansible_connection": "ssh",
            "ansible_python_interpreter": "auto_silent",
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                       "-o LogLevel=ERROR",
            "edge_backends": backend,
            "edge_canary_backends": [{"name": "canary-1", "address": BACKEND[1], "port": 8000}],
            "traffic_policy_overrides": {"trusted_proxies": [f"{GATEWAY}/32"]},
            "haproxy_lb_stats_password": self.stats_password,
            "edge_vip_addresses": [f"{VIP}/{SUBNET.prefixlen}"],
            "edge_vip_auth_pass": self.auth_pass,
        } | (extra or {}), hosts=EDGES)

    def converge(self, extra: dict | None = None) -> Run:
        return run(PLAYBOOK, self.inventory(extra), timeout=900)

    # --- reading the pair --------------------------------------------------------
    def holders(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.holds_vip()]

    def master(self) -> str:
        (holder,) = wait_until(lambda: self.holders() if len(self.holders()) == 1 else None, 30,
                               what="exactly one holder of the virtual address")
        return holder

    def other(self, name: str) -> str:
        (other,) = [n for n in self.nodes if n != name]
        return other


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False
