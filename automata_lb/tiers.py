"""The tiers of the load-balancing layer, one adapter each.

    from automata_lb import tiers
    tiers.NGINX.check(policy)                    # what NGINX cannot express, refused
    tiers.HAPROXY.expected(policy)               # the policy as HAProxy can say it
    tiers.HAPROXY.read_back(cfg, rate_map)       # a rendered haproxy.cfg, in the same terms
    tiers.NGINX.share(25)                        # the operation that moves NGINX's canary share
    edge.run_everywhere(target, "…", [t.share(25) for t in tiers.EDGE])

An adapter says what its tier does in the model's terms: the renderer it
uses (traffic/<tier>.py), the checks of what the tier cannot express, the
read-back of a rendered configuration (the drift check), and for the edge
load balancers the runtime operations: the canary share, draining and
undraining an instance, adding and removing instances, installing a
rendered configuration, reading the live state.  Those are operations of
the tier's part on the node (automata_lb/node/), which owns the tier's one
runtime client; edge.py sends each node every operation of a change in one
SSH round trip.  The mesh's runtime is the stack's (`pulumi up`, stack.py).

`tier(name)` is the only place that tells the tiers apart by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from traffic import drift
from traffic import haproxy as haproxy_render
from traffic import istio as istio_render
from traffic import nginx as nginx_render
from traffic.model import Policy


@dataclass(frozen=True)
class Op:
    """One operation of a part on the node: automata_lb/node/<part>.py's
    function `name`, called with the node's paths and `args`."""
    part: str
    name: str
    args: dict = field(default_factory=dict)

    def request(self) -> list:
        return [self.part, self.name, self.args]


class Tier:
    """What every tier answers: its checks and its drift read-back."""
    name: str
    renderer: ModuleType

    def render(self, policy: Policy, stable: list[tuple[str, str, int]], canary: list[tuple[str, str, int]],
               options=None, **knobs):
        """The policy's blocks for this load balancer, for the `stable` and
        `canary` servers given as (name, host, port); `options` is the
        renderer's own (its Options)."""
        server = self.renderer.Server
        return self.renderer.render(policy, [server(*s) for s in stable], [server(*s) for s in canary], options,
                                    **knobs)

    def check(self, policy: Policy) -> None:
        """Raises PolicyError for what this tier cannot express at all."""
        self.renderer.check(policy)

    def notes(self, policy: Policy) -> list[str]:
        """What this tier renders differently from the policy's words."""
        return self.renderer.notes(policy)

    def expected(self, policy: Policy, **only: bool) -> dict:
        """The policy as this tier can express it (`tls=False`,
        `canary=False` where the configuration has neither)."""
        return drift.expected(policy, self.name, **only)

    def differences(self, policy: Policy, got: dict, **only: bool) -> list[str]:
        """Where a read-back configuration says other than the policy."""
        return drift.differences(self.expected(policy, **only), got)

    def __repr__(self) -> str:
        return f"<tier {self.name}>"


class Nginx(Tier):
    name = "nginx"
    renderer = nginx_render

    def read_back(self, conf: Path | str) -> dict:
        """A rendered NGINX tree (nginx.conf and what it includes)."""
        return drift.nginx_view(conf)

    def share(self, share: int) -> Op:
        """The canary share: its file alone, checked, then reloaded."""
        return Op(self.name, "share", {"file": nginx_render.CANARY_FILE, "text": nginx_render.canary_file(share)})

    def drain(self, names: list[str]) -> Op:
        """Servers marked down in every pool (NGINX has no runtime drain)."""
        return Op(self.name, "servers", {"file": nginx_render.UPSTREAMS_FILE, "down": list(names)})

    def undrain(self, names: list[str]) -> Op:
        return Op(self.name, "servers", {"file": nginx_render.UPSTREAMS_FILE, "up": list(names)})

    def members(self, add: list[dict], remove: list[str], peer: str) -> Op:
        return Op(self.name, "members", {"file": nginx_render.UPSTREAMS_FILE, "add": add, "remove": list(remove),
                                         "peer": peer})

    def install(self, files: dict[str, str]) -> Op:
        return Op(self.name, "install", {"files": files})

    def live(self) -> Op:
        return Op(self.name, "state", {"canary_file": nginx_render.CANARY_FILE})


class HAProxy(Tier):
    name = "haproxy"
    renderer = haproxy_render

    def rate_map(self, policy: Policy) -> str:
        """The rate-limit map the rendered configuration reads (its own file)."""
        return haproxy_render.rate_map(policy)

    def read_back(self, cfg: str, rate_map: str, frontend: str = "frontend public") -> dict:
        """A rendered haproxy.cfg and its rate-limit map (texts)."""
        return drift.haproxy_view(cfg, rate_map, frontend)

    def share(self, share: int, *, runtime_only: bool = False) -> Op:
        """The canary share: the process variable at runtime, and haproxy.cfg
        (checked) so a reload keeps it, unless `runtime_only`."""
        return Op(self.name, "share", {"var": haproxy_render.CANARY_SHARE_VAR, "share": share,
                                       "runtime_only": runtime_only})

    def share_now(self) -> Op:
        """The canary share HAProxy runs (its process variable), alone."""
        return self.command(f"get var {haproxy_render.CANARY_SHARE_VAR}")

    def drain(self, names: list[str]) -> Op:
        return Op(self.name, "servers", {"names": list(names), "state": "drain"})

    def undrain(self, names: list[str]) -> Op:
        return Op(self.name, "servers", {"names": list(names), "state": "ready"})

    def add(self, server: dict, stable: list[str]) -> Op:
        """A new stable instance in at runtime, beside the `stable` servers."""
        return Op(self.name, "add", {"server": server, "stable": list(stable)})

    def members(self, add: list[dict], remove: list[str], peer: str) -> Op:
        return Op(self.name, "members", {"add": add, "remove": list(remove), "peer": peer})

    def install(self, files: dict[str, str]) -> Op:
        return Op(self.name, "install", {"files": files})

    def live(self) -> Op:
        return Op(self.name, "state", {"var": haproxy_render.CANARY_SHARE_VAR})

    def command(self, *commands: str) -> Op:
        """Runtime API commands as they are (a drill's, a test's)."""
        return Op(self.name, "command", {"commands": list(commands)})


class Mesh(Tier):
    name = "istio"
    renderer = istio_render

    def read_back(self, objects: list[dict]) -> dict:
        """The mesh's rendered objects (VirtualServices, DestinationRules...)."""
        return drift.istio_view(objects)


NGINX, HAPROXY, MESH = Nginx(), HAProxy(), Mesh()
# The edge load balancers, in the order a change reaches them: HAProxy
# first, instant through its runtime API, so a refused NGINX check does not
# hold it back.
EDGE = (HAPROXY, NGINX)
KEEPALIVED = Op("keepalived", "state")
TIERS = {t.name: t for t in (NGINX, HAPROXY, MESH)}


def tier(name: str) -> Tier:
    """The adapter of tier `name`; an unknown name is refused naming the known ones."""
    try:
        return TIERS[name]
    except KeyError:
        raise ValueError(f"unknown tier {name!r} (known: {', '.join(TIERS)})") from None
