"""The traffic policy (traffic/policy.yml) as HAProxy configuration blocks.

Imports the repository's `traffic` package by path, as nginx_lb's plugin
does, so both load balancers render the one model (docs/decisions.md, D5).
`haproxy_lb_typed` is the role's variables typed by its argument spec
(rolekit/typed.py, D6).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from rolekit import node_state, typed  # noqa: E402
from traffic import haproxy, model  # noqa: E402


def classes(policy_file: str, overrides: dict | None = None) -> list[str]:
    try:
        return [c.name for c in model.load(policy_file, overrides or {}).classes]
    except model.PolicyError:
        return []


def render(policy_file: str, overrides: dict | None, servers: list, canary_servers: list, options: dict) -> dict:
    """Every block, plus `rate_map_path`: the map's name carries a hash of its
    content, so a new map lands next to the old one (tasks/config.yml)."""
    try:
        policy = model.load(policy_file, overrides or {})
        content = haproxy.rate_map(policy)
        path = f"{options['config_dir']}/maps/rate_limits.{hashlib.sha256(content.encode()).hexdigest()[:16]}.map"
        opts = haproxy.Options(check_path=options["check_path"], check_expect_status=int(options["check_expect_status"]),
                               table_size=str(options["table_size"]), rate_map=path)
        rendered = haproxy.render(policy, haproxy.servers_from(servers), haproxy.servers_from(canary_servers), opts,
                                  health_path=options["health_path"], health_class=options["health_class"])
    except model.PolicyError as exc:
        raise AnsibleFilterError(str(exc)) from None
    return vars(rendered) | {"rate_map_path": path}


class FilterModule:
    def filters(self) -> dict:
        return {"haproxy_lb_policy_problem": model.problem, "haproxy_lb_policy": render,
                "haproxy_lb_policy_classes": classes, "haproxy_lb_typed": typed.for_role(__file__),
                **node_state.filters("haproxy_lb")}
