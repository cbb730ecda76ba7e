"""The traffic policy (traffic/policy.yml) as NGINX configuration blocks.

The model and its renderer live in the repository's `traffic` package, which
Pulumi imports too; this plugin imports it by path (the role sits at
roles/nginx_lb in the same checkout), so the edge and the mesh render the one
model with one piece of code (docs/decisions.md, D5).  `nginx_lb_typed` is the
role's variables typed by its argument spec (rolekit/typed.py, D6).
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from rolekit import node_state, typed  # noqa: E402
from traffic import model, nginx  # noqa: E402


def classes(policy_file: str, overrides: dict | None = None) -> dict:
    """{class name: balance} of the policy ({} when it is invalid: the policy
    check reports that)."""
    try:
        return {c.name: c.balance for c in model.load(policy_file, overrides or {}).classes}
    except model.PolicyError:
        return {}


def render(policy_file: str, overrides: dict | None, servers: list, canary_servers: list, options: dict) -> dict:
    try:
        policy = model.load(policy_file, overrides or {})
        opts = nginx.Options(max_fails=int(options["max_fails"]), fail_timeout=str(options["fail_timeout"]),
                             keepalive=int(options["keepalive"]), keepalive_timeout=str(options["keepalive_timeout"]),
                             zone_size=str(options["zone_size"]), drained=tuple(options["drained"]))
        rendered = nginx.render(policy, nginx.servers_from(servers), nginx.servers_from(canary_servers), opts,
                                health_path=options["health_path"], health_class=options["health_class"])
    except model.PolicyError as exc:
        raise AnsibleFilterError(str(exc)) from None
    return vars(rendered)


def trusted(policy_file: str, overrides: dict | None = None) -> dict:
    """The policy's trusted_proxies split by family, for the kernel's
    per-address limits (nftables keeps one set per family)."""
    try:
        networks = [ipaddress.ip_network(c) for c in model.load(policy_file, overrides or {}).trusted_proxies]
    except model.PolicyError as exc:
        raise AnsibleFilterError(str(exc)) from None
    return {"ipv4": [str(n) for n in networks if n.version == 4], "ipv6": [str(n) for n in networks if n.version == 6]}


class FilterModule:
    def filters(self) -> dict:
        return {"nginx_lb_policy_problem": model.problem, "nginx_lb_policy": render,
                "nginx_lb_policy_classes": classes, "nginx_lb_policy_trusted": trusted,
                "nginx_lb_typed": typed.for_role(__file__), **node_state.filters("nginx_lb")}
