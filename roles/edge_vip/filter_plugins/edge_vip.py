"""Filters of the edge_vip role: the VRRP group as data, and the checks of
tasks/validate.yml that need Python's ipaddress module (no collection such as
ansible.utils is installed on the controllers).

A host's role defaults are not visible in another host's `hostvars`, so
whatever must agree across the group (peer addresses, priorities) is worked
out here from the inventory, with the same fallbacks the defaults use.
Values read there, or from another role's variables, are typed as their
role's argument spec declares them, as the role's own are: `edge_vip_typed`
(rolekit/typed.py, docs/decisions.md D6).
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

_ROLES = Path(__file__).resolve().parents[2]
_ROOT = str(_ROLES.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from rolekit import node_state, typed  # noqa: E402

# Priorities by inventory order: the first host of the group gets the highest.
_FIRST_PRIORITY = 200
_PRIORITY_STEP = 10


def _as_declared(role: str, name: str, value):
    """`value` typed as role `role` declares variable `name`; no_log
    variables (the VRRP password) as given."""
    return typed.typed_view({name: value}, _ROLES / role).get(name.removeprefix(f"{role}_"), value)


def _voters(hosts: list, hostvars) -> list[str]:
    """The hosts of the group that declare addresses: the VRRP instance's
    members (playbooks/edge.yml applies the role to them alone)."""
    return [name for name in hosts if hostvars[name].get("edge_vip_addresses")]


def default_priority(hosts: list, hostvars, host: str) -> int:
    """200, 190, 180 ... by the host's position among the group's members;
    0 (refused by tasks/validate.yml) when it is not one of them."""
    voters = _voters(hosts, hostvars)
    return _FIRST_PRIORITY - _PRIORITY_STEP * voters.index(host) if host in voters else 0


def members(hosts: list, hostvars) -> list[dict]:
    """[{name, address, priority}] of every member of the group, in inventory
    order: what each of them will run with, as the role's defaults work it out."""
    found = []
    for name in _voters(hosts, hostvars):
        hv = hostvars[name]
        address = hv.get("edge_vip_unicast_address") or hv.get("ansible_host") or name
        priority = hv.get("edge_vip_priority")
        if priority is None:
            priority = default_priority(hosts, hostvars, name)
        # Left as given when it is no number: the priority check names it.
        with contextlib.suppress(AnsibleFilterError):
            priority = _as_declared("edge_vip", "edge_vip_priority", priority)
        found.append({"name": name, "address": str(address), "priority": priority})
    return found


def disagreements(hosts: list, hostvars, own: dict) -> list[str]:
    """'variable (host)' for every group-wide variable another host of the
    group sets, in the inventory, to a value other than this host's (`own`:
    typed).  Values are never returned (one of them is the VRRP password)."""
    found = []
    for name in _voters(hosts, hostvars):
        hv = hostvars[name]
        for key, value in own.items():
            if key not in hv:
                continue
            try:
                theirs = _as_declared("edge_vip", key, hv[key])
            except AnsibleFilterError:
                theirs = None  # cannot be typed: cannot be the same
            if theirs != value:
                found.append(f"{key} ({name})")
    return found


def invalid_addresses(values: list) -> list:
    """Entries that are not an IPv4 address with its prefix (10.0.0.100/24),
    or that are the network or broadcast address of that prefix."""
    bad = []
    for value in values:
        text = str(value)
        try:
            iface = ipaddress.IPv4Interface(text)
        except ValueError:
            bad.append(value)
            continue
        net = iface.network
        if "/" not in text or (net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address)):
            bad.append(value)
    return bad


def invalid_ipv4(values: list) -> list:
    """Entries that are not a single IPv4 address (host names included:
    keepalived's unicast peers are addresses)."""
    bad = []
    for value in values:
        try:
            ipaddress.IPv4Address(str(value))
        except ValueError:
            bad.append(value)
    return bad


def hosts_of(addresses: list) -> list[str]:
    """The address part of each valid entry of edge_vip_addresses."""
    return [str(ipaddress.IPv4Interface(str(a)).ip) for a in addresses if not invalid_addresses([a])]


def local_url(address: str, port, path: str) -> str:
    """The URL a process on the node reaches a listener at: a wildcard
    listener on loopback, a specific one on its own address."""
    address = str(address)
    if address in ("*", "0.0.0.0", ""):
        host = "127.0.0.1"
    elif address in ("[::]", "::"):
        host = "[::1]"
    else:
        host = address
    return f"http://{host}:{port}{path}"


def haproxy_url(binds: list, path: str) -> str:
    """The monitor URI on HAProxy's first plain-HTTP listener (`binds`:
    haproxy_lb_binds)."""
    plain = [b for b in _as_declared("haproxy_lb", "haproxy_lb_binds", binds) if not b.get("tls")]
    if not plain:
        return ""  # refused by tasks/validate.yml, which names haproxy_lb_binds
    return local_url(plain[0].get("address", "*"), plain[0]["port"], path)


def sysctl_is_on(overrides, key: str) -> bool:
    """Whether kernel_tuning_sysctl_overrides (a dict, or `k=v` text from the
    command line) sets `key` to 1."""
    overrides = _as_declared("kernel_tuning", "kernel_tuning_sysctl_overrides", overrides)
    return str(overrides.get(key, "")).strip() == "1"


class FilterModule:
    def filters(self) -> dict:
        return {
            "edge_vip_default_priority": default_priority,
            "edge_vip_members": members,
            "edge_vip_disagreements": disagreements,
            "edge_vip_invalid_addresses": invalid_addresses,
            "edge_vip_invalid_ipv4": invalid_ipv4,
            "edge_vip_hosts": hosts_of,
            "edge_vip_local_url": local_url,
            "edge_vip_haproxy_url": haproxy_url,
            "edge_vip_sysctl_is_on": sysctl_is_on,
            "edge_vip_typed": typed.for_role(__file__),
            **node_state.filters("edge_vip"),
        }
