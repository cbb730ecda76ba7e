"""Changes to the backends of the lab or of an inventory's edge nodes, by
desired state: say what should run, and `reconcile` gets there without
dropping a request.

The state is what an operator would write by hand: the inventory's
`edge_backends`, `edge_canary_backends` and canary share
(`traffic_policy_overrides.canary.share`), plus what each backend runs
(recorded by its instances' keeper, automata_lb/instances.py).  Every
command computes the state it wants; rollback is reconciling back to the
state a command recorded before it ran.

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

from traffic import model

from . import edge, instances, inventory
from .targets import Target, TargetError
from .tiers import HAPROXY
from .wait import until

Say = Callable[[str], None]


@dataclass
class BackendState:
    backends: list[dict]
    canary_backends: list[dict]
    releases: dict[str, str]
    canary_share: int

    def as_dict(self) -> dict:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, doc: dict) -> BackendState:
        return cls(**copy.deepcopy(doc))

    def names(self) -> list[str]:
        return [b["name"] for b in self.backends + self.canary_backends]

    def release(self, name: str) -> str:
        track = "canary" if name in {b["name"] for b in self.canary_backends} else "stable"
        return self.releases.get(name, track)


def current(target: Target) -> BackendState:
    overrides = inventory.read(target.inventory, "traffic_policy_overrides", {}) or {}
    share = model.load(overrides=overrides).canary.share
    return BackendState(inventory.read(target.inventory, "edge_backends", []) or [],
                    inventory.read(target.inventory, "edge_canary_backends", []) or [],
                    instances.of(target).releases(), share)


class NoSpare(ValueError):
    """More stable instances asked than the target can start."""


def with_stable_count(state: BackendState, n: int, spares: list[dict]) -> BackendState:
    """`state` with n stable instances: new ones are the first spares not in
    use; the last spares go first, the instances that are no spare last."""
    used = {b["name"] for b in state.backends}
    free = [s for s in spares if s["name"] not in used]
    if n > len(state.backends) + len(free):
        raise NoSpare(f"{len(state.backends)} stable instances run and {len(free)} more can start; {n} asked")
    state.backends += free[:max(0, n - len(state.backends))]
    order = {s["name"]: i for i, s in enumerate(spares)}
    state.backends = sorted(state.backends, key=lambda b: order.get(b["name"], -1))[:n]
    return state


def refusal(target: Target, before: BackendState, desired: BackendState) -> str | None:
    """Why `desired` cannot be reached from `before` on this target, before
    anything is touched: instances to start or stop and nobody to do it."""
    if before.names() == desired.names() and all(desired.release(n) == before.release(n) for n in desired.names()):
        return None
    return instances.of(target).refusal()


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    until(predicate, timeout, what, interval=0.3, error=TargetError)


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
    name = entry["name"]
    server = {k: entry[k] for k in ("name", "address", "port")}
    if edge.add_at_runtime(target, server, [b["name"] for b in current(target).backends]):
        say(f"{name} added to HAProxy at runtime; waiting for its health checks")
        _wait(lambda: _up_everywhere(target, name), 30, f"HAProxy seeing {name} UP")
        say(f"{name} takes traffic on HAProxy (NGINX once its pools are written)")


def _start(fleet: instances.Instances, entry: dict, track: str, release: str | None, say: Say) -> None:
    say(f"starting {entry['name']} ({release or track}) at {entry['address']}")
    fleet.start(entry, track, release)


def _stop(fleet: instances.Instances, entry: dict, say: Say) -> None:
    say(f"stopping {entry['name']} (SIGTERM: in-flight requests finish, WebSockets close with 1001)")
    fleet.stop(entry)


def _replace(target: Target, fleet: instances.Instances, entry: dict, track: str, release: str, say: Say) -> None:
    name = entry["name"]
    say(f"draining {name}: HAProxy at runtime, NGINX marks it down (checked file + reload)")
    edge.drain(target, [name])
    try:
        _wait(lambda: _sessions(target, name) == 0, 30, f"{name} ending its sessions")
    except TargetError:
        say(f"{name}: sessions left after 30s; they end with its graceful shutdown")
    _stop(fleet, entry, say)
    _start(fleet, entry, track, release, say)
    edge.undrain(target, [name])
    _wait(lambda: _up_everywhere(target, name), 60, f"HAProxy seeing {name} UP again")
    say(f"{name} runs {release} and takes traffic again")


PLAIN_SERVER = {"name", "address", "port"}  # an inventory entry with nothing but the role's defaults


def _members_change(target: Target, have: BackendState, desired: BackendState) -> dict | None:
    """The stable servers to add and remove when the render of `desired`
    lists exactly `have`'s servers minus some, plus new ones at the end, and
    the new ones and the last one kept (whose lines they copy) carry only
    the role's defaults; None when only a render can tell (canary pools
    changed, a server in the middle, per-server settings, a drained peer)."""
    removed = [b["name"] for b in have.backends if b["name"] not in {d["name"] for d in desired.backends}]
    kept = [b for b in have.backends if b["name"] not in removed]
    added = desired.backends[len(kept):]
    if desired.canary_backends != have.canary_backends or not kept or desired.backends[:len(kept)] != kept:
        return None
    if any(set(b) != PLAIN_SERVER for b in [kept[-1], *added]):
        return None
    drained = inventory.read(target.inventory, "nginx_lb_drained_servers", []) or []
    if not isinstance(drained, list) or kept[-1]["name"] in drained or any(b["name"] in drained for b in added):
        return None
    return {"add": added, "remove": removed, "peer": kept[-1]["name"]}


def reconcile(target: Target, desired: BackendState, say: Say) -> None:
    have = current(target)
    if why := refusal(target, have, desired):
        raise TargetError(why)
    fleet = instances.of(target)
    tracks = {b["name"]: "stable" for b in desired.backends} | {b["name"]: "canary" for b in desired.canary_backends}
    entries = {b["name"]: b for b in desired.backends + desired.canary_backends}
    old_entries = {b["name"]: b for b in have.backends + have.canary_backends}

    added = [n for n in desired.names() if n not in have.names()]
    removed = [n for n in have.names() if n not in desired.names()]
    replaced = [n for n in desired.names() if n in have.names() and desired.release(n) != have.release(n)]

    for name in added:
        _start(fleet, entries[name], tracks[name], desired.releases.get(name), say)
        if tracks[name] == "stable":
            add_to_haproxy(target, entries[name], say)
    for name in replaced:
        _replace(target, fleet, entries[name], tracks[name], desired.release(name), say)
    for name in removed:
        say(f"draining {name} on HAProxy")
        edge.drain(target, [name], tiers=[HAPROXY])

    if desired.canary_share != have.canary_share:
        say(f"canary share {have.canary_share}% -> {desired.canary_share}% (checked file + reload on NGINX, "
            "runtime API on HAProxy; the inventory says the same)")
        EdgeCanary(target, say).set_weight(desired.canary_share)

    changes = {k: v for k, v in (("edge_backends", desired.backends),
                                 ("edge_canary_backends", desired.canary_backends))
               if v != {"edge_backends": have.backends, "edge_canary_backends": have.canary_backends}[k]}
    if changes:
        say("writing the inventory: " + ", ".join(changes))
        inventory.write(target.inventory, changes)
        if members := _members_change(target, have, desired):
            say("the load balancers' pools, line by line as a converge would write them (checked, then reloaded)")
            answers = edge.set_members(target, **members)
        else:
            say("the load balancers' pools, as a converge would write them (checked, then reloaded)")
            answers = edge.apply_inventory(target, say)
        for node, how in answers.items():
            say(f"{node}: HAProxy {how['haproxy']}; NGINX {how['nginx']}")
    for name in removed:
        _stop(fleet, old_entries[name], say)


class EdgeCanary:
    """The lab's or an inventory's edge nodes as a progressive rollout's
    tier: weights on both load balancers of every edge node
    (edge.set_canary_share, recorded in the inventory), instances through
    `reconcile`."""

    def __init__(self, target: Target, say: Say) -> None:
        self.target, self.say = target, say

    def set_weight(self, weight: int) -> dict:
        return edge.set_canary_share(self.target, weight, record=True)

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
        return {n["node"]: {"nginx": n.get("nginx", {}).get("canary_share"),
                            "haproxy": n.get("haproxy", {}).get("canary_share")}
                for n in edge.probe_all(self.target) if n.get("reachable")}
