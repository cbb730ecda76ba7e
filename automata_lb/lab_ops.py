"""Changes to the lab's backends, by desired state: say what the lab should
run, and `reconcile` gets there without dropping a request.

The state is what an operator would write by hand: the inventory's
`edge_backends`, `edge_canary_backends` and canary share
(`traffic_policy_overrides.canary.share`), plus what each backend runs
(.lab/releases.json).  Every command computes the state it wants; rollback
is reconciling back to the state a command recorded before it ran.

Order, so that no request fails: new instances start and pass their health
check first; an instance to replace is drained on HAProxy (at runtime)
and marked down on NGINX (a checked file and a reload) before it stops, and
one to remove leaves both load balancers' pools before it stops; it stops
with SIGTERM, so the backend finishes what it has and closes WebSockets
cleanly.  Canary pools fall back to their stable backups.  A change of the
backend lists is one inventory change, after which the load balancers get
the configuration a converge would write (edge.apply_inventory: rendered
here by the roles, installed through `nginx -t` and `haproxy -c`), without
a converge; the canary share is written into the inventory and onto the
nodes directly (edge.set_canary_share).  Either way the next converge
changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx

from lab import images, monitoring as lab_monitoring, stack as lab_stack, topology
from traffic import model

from . import edge, inventory
from .targets import Target, TargetError
from .wait import until

MAX_STABLE = 9  # backend-1..9 at 10.77.7.21-29
Say = Callable[[str], None]


@dataclass
class LabState:
    backends: list[dict]
    canary_backends: list[dict]
    releases: dict[str, str]
    canary_share: int

    def as_dict(self) -> dict:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, doc: dict) -> LabState:
        return cls(**copy.deepcopy(doc))

    def names(self) -> list[str]:
        return [b["name"] for b in self.backends + self.canary_backends]

    def release(self, name: str) -> str:
        track = "canary" if name in {b["name"] for b in self.canary_backends} else "stable"
        return self.releases.get(name, track)


def current(target: Target) -> LabState:
    overrides = inventory.read(target.inventory, "traffic_policy_overrides", {}) or {}
    share = model.load(overrides=overrides).canary.share
    return LabState(inventory.read(target.inventory, "edge_backends", []) or [],
                    inventory.read(target.inventory, "edge_canary_backends", []) or [],
                    lab_stack.releases(), share)


def stable_backend(n: int) -> dict:
    return {"name": f"backend-{n}", "address": f"10.77.7.{20 + n}", "port": topology.BACKEND_APP_PORT}


def with_stable_count(state: LabState, n: int) -> LabState:
    """`state` with n stable instances: new ones take the lowest free numbers,
    and the highest-numbered go first."""
    used = {b["name"] for b in state.backends}
    while len(state.backends) < n:
        k = next(i for i in range(1, MAX_STABLE + 1) if f"backend-{i}" not in used)
        state.backends.append(stable_backend(k))
        used.add(f"backend-{k}")
    state.backends = sorted(state.backends, key=lambda b: int(b["name"].rsplit("-", 1)[1]))[:n]
    return state


def _topology_backend(entry: dict, track: str) -> topology.Backend:
    known = {b.name: b for b in topology.BACKENDS}
    if entry["name"] in known:
        return known[entry["name"]]
    return topology.Backend(entry["name"], entry["address"], 0, version=track)


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    until(predicate, timeout, what, interval=0.3, error=TargetError)


def _healthy(entry: dict) -> bool:
    try:
        return httpx.get(f"http://{entry['address']}:{entry['port']}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _sections(target: Target, server: str) -> dict[str, list[str]]:
    """Per edge node, the HAProxy backends that hold `server` (as a non-backup)."""
    found: dict[str, list[str]] = {}
    for node in edge.probe_all(target):
        found[node["node"]] = [s["backend"] for s in node.get("haproxy", {}).get("servers", [])
                               if s["server"] == server and not s.get("backup")]
    return found


def set_server_state(target: Target, server: str, state: str) -> None:
    """drain / maint / ready on every HAProxy backend of every edge that holds it."""
    sections = _sections(target, server)
    for node in target.edges:
        commands = [f"set server {section}/{server} state {state}" for section in sections.get(node.name, [])]
        if commands:
            edge.runtime(node, *commands)


def _sessions(target: Target, server: str) -> int:
    return sum(s["sessions"] for n in edge.probe_all(target) for s in n.get("haproxy", {}).get("servers", [])
               if s["server"] == server)


def _up_everywhere(target: Target, server: str) -> bool:
    states = [s["status"] for n in edge.probe_all(target) for s in n.get("haproxy", {}).get("servers", [])
              if s["server"] == server and not s.get("backup")]
    return bool(states) and all(st == "UP" for st in states)


def add_to_haproxy(target: Target, entry: dict, say: Say) -> None:
    """Give a new stable instance traffic at once through HAProxy's runtime API
    (dynamic servers, with health checks), in every backend where stable
    servers serve; the configuration installed next (apply_inventory) names it."""
    name, peer = entry["name"], None
    for node in edge.probe_all(target):
        servers = node.get("haproxy", {}).get("servers", [])
        if any(s["server"] == name for s in servers):
            continue
        stable = {b["name"] for b in current(target).backends}
        sections = sorted({s["backend"] for s in servers if s["server"] in stable and not s.get("backup")})
        weight = next((s["weight"] for s in servers if s["server"] in stable and not s.get("backup")), 1)
        peer = next(n for n in target.edges if n.name == node["node"])
        commands = []
        for section in sections:
            commands += [f"add server {section}/{name} {entry['address']}:{entry['port']} check weight {weight}",
                         f"enable health {section}/{name}", f"enable server {section}/{name}"]
        if commands:
            edge.runtime(peer, *commands)
    if peer:
        say(f"{name} added to HAProxy at runtime; waiting for its health checks")
        _wait(lambda: _up_everywhere(target, name), 30, f"HAProxy seeing {name} UP")
        say(f"{name} takes traffic on HAProxy (NGINX once its pools are written)")


def _start(entry: dict, track: str, release: str | None, image: str, say: Say) -> None:
    lab_stack.set_release(entry["name"], None if release in (None, track) else release)
    backend = _topology_backend(entry, track)
    say(f"starting {entry['name']} ({release or track}) at {entry['address']}")
    lab_stack.ensure_backend(backend, image, publish=backend.index > 0)
    _wait(lambda: _healthy(entry), 60, f"{entry['name']} answering /health")


def _replace(target: Target, entry: dict, track: str, release: str, image: str, say: Say) -> None:
    name = entry["name"]
    say(f"draining {name}: HAProxy at runtime, NGINX marks it down (checked file + reload)")
    set_server_state(target, name, "drain")
    edge.set_nginx_servers(target, down=[name])
    try:
        _wait(lambda: _sessions(target, name) == 0, 30, f"{name} ending its sessions")
    except TargetError:
        say(f"{name}: sessions left after 30s; they end with its graceful shutdown")
    say(f"stopping {name} (SIGTERM: in-flight requests finish, WebSockets close with 1001)")
    lab_stack.remove_backend(name)
    _start(entry, track, release, image, say)
    set_server_state(target, name, "ready")
    edge.set_nginx_servers(target, up=[name])
    _wait(lambda: _up_everywhere(target, name), 60, f"HAProxy seeing {name} UP again")
    say(f"{name} runs {release} and takes traffic again")


def reconcile(target: Target, desired: LabState, say: Say) -> None:
    have = current(target)
    tracks = {b["name"]: "stable" for b in desired.backends} | {b["name"]: "canary" for b in desired.canary_backends}
    entries = {b["name"]: b for b in desired.backends + desired.canary_backends}
    image = images.ensure_backend()

    added = [n for n in desired.names() if n not in have.names()]
    removed = [n for n in have.names() if n not in desired.names()]
    replaced = [n for n in desired.names() if n in have.names() and desired.release(n) != have.release(n)]

    for name in added:
        _start(entries[name], tracks[name], desired.releases.get(name), image, say)
        if tracks[name] == "stable":
            add_to_haproxy(target, entries[name], say)
    for name in replaced:
        _replace(target, entries[name], tracks[name], desired.release(name), image, say)
    for name in removed:
        say(f"draining {name} on HAProxy")
        set_server_state(target, name, "drain")

    if desired.canary_share != have.canary_share:
        say(f"canary share {have.canary_share}% -> {desired.canary_share}% (checked file + reload on NGINX, "
            "runtime API on HAProxy; the inventory says the same)")
        LabCanary(target, say).set_weight(desired.canary_share)

    changes = {k: v for k, v in (("edge_backends", desired.backends),
                                 ("edge_canary_backends", desired.canary_backends))
               if v != {"edge_backends": have.backends, "edge_canary_backends": have.canary_backends}[k]}
    if changes:
        say("writing the inventory: " + ", ".join(changes))
        inventory.write(target.inventory, changes)
        lab_monitoring.write_backend_targets(
            lab_stack.PROMETHEUS_DIR, [(n, entries[n]["address"], tracks[n]) for n in desired.names()])
        say("the load balancers' pools, as a converge would write them (checked, then reloaded)")
        for node, how in edge.apply_inventory(target, say).items():
            say(f"{node}: HAProxy {how['haproxy']}; NGINX {how['nginx']}")
    for name in removed:
        say(f"stopping {name} (SIGTERM: in-flight requests finish, WebSockets close with 1001)")
        lab_stack.remove_backend(name)
        lab_stack.set_release(name, None)


class LabCanary:
    """The lab as a progressive rollout's tier: weights on both load
    balancers of every edge node (edge.set_canary_share, recorded in the
    inventory), instances through `reconcile`."""

    def __init__(self, target: Target, say: Say) -> None:
        self.target, self.say = target, say

    def set_weight(self, weight: int) -> dict:
        return edge.set_canary_weight(self.target, weight)

    def _releases(self, names: list[str], release_of: Callable[[str], str]) -> None:
        desired = current(self.target)
        for name in names:
            desired.releases[name] = release_of(name)
        reconcile(self.target, desired, self.say)

    def deploy(self, release: str) -> None:
        self._releases([b["name"] for b in current(self.target).canary_backends], lambda _: release)

    def promote(self, release: str) -> None:
        self._releases([b["name"] for b in current(self.target).backends], lambda _: release)

    def restore_canary(self, releases: dict[str, str]) -> None:
        self._releases([b["name"] for b in current(self.target).canary_backends],
                       lambda name: releases.get(name, "canary"))

    def weights(self) -> dict[str, dict[str, int | None]]:
        return {n["node"]: {"nginx": n.get("nginx", {}).get("canary_percent"),
                            "haproxy": n.get("haproxy", {}).get("canary_percent")}
                for n in edge.probe_all(self.target) if n.get("reachable")}
