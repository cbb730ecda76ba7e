"""Jinja filters for the input checks of the haproxy_lb role (tasks/validate.yml).

No collection is installed on the controllers (ansible.utils.ipaddr is not
available), so addresses and networks are read with Python's ipaddress
module, as nginx_lb's checks do.
"""

from __future__ import annotations

import ipaddress


def listener_address_problem(value: str) -> str:
    """Why `value` cannot be the address of the stats/metrics listener, or "".

    It must be one IP address of the node: a wildcard would publish the
    stats page and the metrics on every interface, a public one included,
    and a host name is resolved by HAProxy at start-up to whatever the
    resolver says then."""
    text = str(value).strip()
    if text in ("", "*"):
        return f"'{text}' listens on every address of the node" if text else "is empty"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return f"'{text}' is not an IP address (without brackets or port)"
    if address.is_unspecified:
        return f"'{text}' listens on every address of the node"
    return ""


def invalid_networks(values: list) -> list:
    """The entries that are not a CIDR network (host bits zero), or that
    hold every address (/0: no restriction at all)."""
    bad = []
    for value in values:
        try:
            if ipaddress.ip_network(str(value), strict=True).prefixlen == 0:
                bad.append(value)
        except ValueError:
            bad.append(value)
    return bad


class FilterModule:
    def filters(self) -> dict:
        return {"haproxy_lb_listener_address_problem": listener_address_problem,
                "haproxy_lb_invalid_networks": invalid_networks}
