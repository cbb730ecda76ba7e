"""keepalived on an edge node: its VRRP state (published by the role's
notify script) and which of the floating addresses the node holds now."""

import re

from automata_lb.node import system


def state(paths, config="/etc/keepalived/keepalived.conf", state_file="/run/keepalived/state"):
    found = system.service("keepalived")
    try:
        text = system.read(config)
    except OSError:
        text = ""
    blocks = re.findall(r"virtual_ipaddress\s*\{([^}]*)\}", text)
    addresses = [line.split()[0].split("/")[0] for block in blocks for line in block.splitlines() if line.split()]
    try:
        published = dict(line.strip().split("=", 1) for line in system.read(state_file).splitlines() if "=" in line)
    except OSError:
        published = {}
    held = set(re.findall(r"inet (\S+)/", system.run("ip", "-o", "-4", "addr", "show")))
    return {"active": found["active"], "state": published.get("state"),
            "since": float(published["since"]) if published.get("since") else None,
            "addresses": addresses, "holds": [a for a in addresses if a in held]}
