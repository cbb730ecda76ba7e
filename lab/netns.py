"""Test client hosts: a network namespace plugged into the lab's bridge.

Everything the host sends to the lab through the published ports arrives
from the gateway (10.77.7.1), which the lab's traffic policy trusts as the
proxy in front of the edge, so per-peer (TCP-level) limits never see it.  A
client host is a namespace with one veth end in the Podman bridge and an
address of the lab subnet (topology.TEST_CLIENT_ADDRESSES): what it sends
reaches the nodes from that address, like a machine on the same LAN.

    from lab import netns
    with netns.client_host("abuser", "10.77.7.240") as host:
        host.run(["curl", "-s", "http://10.77.7.11/health"])
        proc = host.popen([sys.executable, "-m", "some.client", ...])

Root only (ip netns, veth).  The namespace and its veth are removed when the
block ends, whatever happened; one left behind by a killed run is replaced
when the same name is used again.  The namespace has only the lab subnet's
route: it can reach the lab's nodes and nothing else.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from . import topology
from .podman import podman

# The veth end inside the namespace is renamed to this.
INNER_INTERFACE = "eth0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], text=True, capture_output=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def bridge_interface(network: str = topology.NETWORK) -> str:
    """The host interface of a Podman network (its Linux bridge)."""
    return json.loads(podman("network", "inspect", network).stdout)[0]["network_interface"]


def veth_name(name: str) -> str:
    """Host end of the namespace's veth: derived from the name, within the
    kernel's 15 characters, so a rerun finds (and replaces) a stale one."""
    return f"lt{zlib.crc32(name.encode()):08x}"


@dataclass(frozen=True)
class ClientHost:
    name: str      # the namespace (`ip netns exec NAME ...`)
    address: str   # its address on the lab network
    bridge: str    # the host bridge it is plugged into

    def command(self, argv: Sequence[str]) -> list[str]:
        """argv run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run inside the namespace (text output captured by default)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(argv), **kwargs)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """subprocess.Popen inside the namespace: for clients that run alongside a test."""
        return subprocess.Popen(self.command(argv), **kwargs)


def remove(name: str) -> None:
    """Remove the namespace and its veth; nothing to remove is fine."""
    if name in _ip("netns", "list").stdout.split():
        _ip("netns", "delete", name)  # deletes the veth pair with its inner end, soon
    # The kernel destroys the pair after the namespace, not with it: the host
    # end may still be listed, then gone before a delete of our own reaches it.
    deadline = time.monotonic() + 5
    while _ip("link", "show", veth_name(name), check=False).returncode == 0:
        _ip("link", "delete", veth_name(name), check=False)
        if time.monotonic() > deadline:
            raise RuntimeError(f"client host {name}: {veth_name(name)} is still there after 5 s")
        time.sleep(0.05)


@contextmanager
def client_host(name: str, address: str, *, network: str = topology.NETWORK,
                subnet: str = topology.SUBNET) -> Iterator[ClientHost]:
    """A namespace named `name` on `network` with `address`; removed on exit."""
    net = ipaddress.ip_network(subnet)
    if ipaddress.ip_address(address) not in net:
        raise ValueError(f"client host {name}: {address} is not in the lab subnet {subnet}")
    if network == topology.NETWORK and address not in topology.TEST_CLIENT_ADDRESSES:
        raise ValueError(f"client host {name}: {address} is not one of the lab's test client addresses "
                         f"({topology.TEST_CLIENT_ADDRESSES[0]}-{topology.TEST_CLIENT_ADDRESSES[-1]})")
    bridge = bridge_interface(network)
    outer, inner = veth_name(name), "lp" + veth_name(name)[2:]
    remove(name)
    try:
        _ip("netns", "add", name)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("link", "set", outer, "master", bridge)
        _ip("link", "set", outer, "up")
        _ip("-n", name, "link", "set", inner, "name", INNER_INTERFACE)
        _ip("-n", name, "addr", "add", f"{address}/{net.prefixlen}", "dev", INNER_INTERFACE)
        _ip("-n", name, "link", "set", INNER_INTERFACE, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield ClientHost(name, address, bridge)
    finally:
        remove(name)
