"""Jinja filters for the input checks of the nginx_lb role (tasks/validate.yml).

No collection is installed on the controllers (ansible.utils.ipaddr is not
available), and a regular expression for IPv6 networks would be unreadable,
so the check uses Python's ipaddress module.
"""

from __future__ import annotations

import ipaddress


def invalid_networks(values: list) -> list:
    """Return the entries that are not an IP address or a CIDR network.

    Host bits set below the prefix ("10.0.0.1/8") count as invalid: NGINX
    accepts them with a warning but the author almost certainly meant
    something else.
    """
    bad = []
    for value in values:
        try:
            ipaddress.ip_network(str(value), strict=True)
        except ValueError:
            bad.append(value)
    return bad


class FilterModule:
    def filters(self) -> dict:
        return {"nginx_lb_invalid_networks": invalid_networks}
