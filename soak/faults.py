"""The faults a soak injects, one at a time, each with its recovery.

Every fault acts on the lab the way production meets it (a process killed,
a reload carrying a change, a slow or failing instance, a scale-out, the
monitoring restarted) and returns only once it is in effect; its recovery
returns only once the lab is whole again, both proven by polling the lab.
What a fault may cost is its bound: zero failed requests for what the tier
does without loss by design, the requests in flight on an instance when it
died for a kill.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from automata_lb import backend_changes, instances
from automata_lb import edge as edge_ops
from automata_lb import targets
from automata_lb.prom import Prometheus, PrometheusError
from lab import vip as lab_vip
from lab.podman import podman
from load_tests.drill import DrillError, InFlightSampler, Lab, wait_for

from .gates import FaultGate


@dataclass
class Injection:
    """One fault as it happened, and what it cost."""
    fault: str
    started: float                   # time.time() when the fault began
    injected: float = 0.0            # when it was in effect
    recovering: float = 0.0          # when its recovery began
    recovered: float = 0.0           # when the lab was whole again
    bound: int = 0                   # most failed requests allowed in its window
    bound_reason: str = "hitless by design"
    detail: str = ""
    window_end: float = 0.0          # the next fault's start (or the end of the load)
    requests: int = 0
    failures: int = 0
    failures_by_target: dict[str, int] = field(default_factory=dict)
    failure_examples: list[str] = field(default_factory=list)
    alerts: dict[str, dict] = field(default_factory=dict)
    # Endpoints the fault takes down by design (a stopped or frozen load
    # balancer): what is sent straight to them fails, counted apart.
    excluded: list[str] = field(default_factory=list)
    excluded_failures: int = 0

    @property
    def ok(self) -> bool:
        return self.failures <= self.bound and all(a["ok"] for a in self.alerts.values())


class Soak:
    """What the faults act on: the lab (its nodes, backends, Prometheus),
    and the victim of the instance faults, chosen by the run's seed."""

    def __init__(self, lab: dict, victim: str, log: Callable[[str], None], users_by_target: dict[str, int]) -> None:
        self.lab = Lab(lab)
        self.info = lab
        self.victim = victim
        self.log = log
        self.prometheus = Prometheus(lab["prometheus"]["url"], timeout=3)
        self.users_by_target = users_by_target
        self.nodes = {e["name"]: lab_vip.Node(e["name"], e["container"], lab["vip"]["address"])
                      for e in lab["edges"]} if lab.get("vip") else {}

    def _holders(self) -> list[str]:
        """The nodes that hold the floating address; a frozen node (which
        cannot be asked) holds nothing anyone can reach."""
        found = []
        for name, node in self.nodes.items():
            try:
                if node.holds_vip():
                    found.append(name)
            except RuntimeError:
                continue
        return found

    def holder(self) -> str:
        """The edge node that holds the floating address."""
        holders = self._holders()
        if len(holders) != 1:
            raise DrillError(f"not exactly one node holds the floating address: {holders}")
        return holders[0]

    def vip_users(self) -> int:
        return sum(n for name, n in self.users_by_target.items() if name.startswith("vip/"))

    def settled(self) -> bool:
        """One node holds the address as MASTER, every other is a BACKUP."""
        holders = self._holders()
        try:
            states = {name: node.state().get("state") for name, node in self.nodes.items()}
        except RuntimeError:
            return False
        return len(holders) == 1 and all(s == ("MASTER" if n == holders[0] else "BACKUP") for n, s in states.items())

    @property
    def target(self) -> targets.Target:
        return targets.lab()

    def backend(self, name: str | None = None) -> dict:
        return self.lab.backends[name or self.victim]

    def canary_share(self) -> int:
        return self.lab.canary_share(self.lab.edges[0])

    def set_share(self, share: int) -> None:
        """Both load balancers of every node, until the next converge (the
        inventory keeps its share: a soak leaves nothing to converge)."""
        edge_ops.set_canary_share(self.target, share)

    def reload(self, service: str) -> None:
        for e in self.lab.edges:
            before = self.lab.workers(e, service)
            self.lab.ssh(e, f"systemctl reload {service}")
            wait_for(lambda e=e, before=before: self.lab.workers(e, service) - before, 30,
                     f"new {service} workers on {e['name']}")

    def fault_api(self, method: str, body: dict | None = None) -> None:
        url = f"{self.backend()['endpoints']['admin']}/fault"
        httpx.request(method, url, json=body, timeout=10).raise_for_status()

    def haproxy_says(self, state: str) -> bool:
        return all(states and all(v.startswith(state) for v in states.values())
                   for states in (self.lab.server_status(e, self.victim) for e in self.lab.edges))

    def whole(self) -> bool:
        return self.lab.container_running(self.victim) and self.lab.healthy_everywhere(self.victim)


class Fault:
    name: str
    gate: FaultGate

    def __init__(self, gate: FaultGate) -> None:
        self.gate = gate

    def inject(self, soak: Soak, event: Injection) -> None:
        raise NotImplementedError

    def recover(self, soak: Soak, event: Injection) -> None:
        raise NotImplementedError


HISTORY_S = 0.5   # the stretch of a killed instance's last moments its bound is read over


class BackendKill(Fault):
    """SIGKILL: the instance dies with what it holds; back after `hold`."""
    name = "backend-kill"

    def inject(self, soak: Soak, event: Injection) -> None:
        backend = soak.backend()
        sampler = InFlightSampler(f"{backend['endpoints']['app']}/metrics").start()
        history = time.time()
        wait_for(lambda: sampler.samples and sampler.samples[-1][0] >= history + HISTORY_S, 10,
                 f"half a second of {soak.victim}'s in-flight gauge")
        issued = time.time()
        podman("kill", backend["container"])
        wait_for(lambda: not soak.lab.container_running(soak.victim), 30, f"{soak.victim} to die")
        sampler.stop()
        # The most it held in its last half second: on a busy machine the
        # gauge's last reading can come a sampling gap before the end, and
        # a session that opened in that gap dies with it uncounted.
        event.bound = sampler.at_death(issued - HISTORY_S)
        event.bound_reason = "requests in flight on the instance when it died"
        wait_for(lambda: soak.haproxy_says("DOWN"), 60, f"HAProxy to mark {soak.victim} down on every node")
        event.detail = f"{soak.victim}: {event.bound} in flight at death; down everywhere after {time.time() - issued:.1f} s"

    def recover(self, soak: Soak, event: Injection) -> None:
        podman("start", soak.backend()["container"])
        wait_for(soak.whole, 90, f"{soak.victim} healthy behind both balancers on every node", interval=0.5)


class LbReload(Fault):
    """A change that needs a reload of both load balancers on every node:
    the canary share moved by 5 points, written (NGINX: checked file and a
    reload) and HAProxy reloaded onto its written configuration."""
    name = "lb-reload"

    def inject(self, soak: Soak, event: Injection) -> None:
        self.share = soak.canary_share()
        changed = self.share + 5 if self.share <= 95 else self.share - 5
        soak.set_share(changed)
        soak.reload("haproxy")
        event.detail = f"canary share {self.share} % -> {changed} %, NGINX and HAProxy reloaded on every node"

    def recover(self, soak: Soak, event: Injection) -> None:
        soak.set_share(self.share)
        soak.reload("haproxy")


class CanaryStep(Fault):
    """A canary step up to half of the canary class, and back."""
    name = "canary-step"

    def inject(self, soak: Soak, event: Injection) -> None:
        self.share = soak.canary_share()
        soak.set_share(50)
        event.detail = f"canary share {self.share} % -> 50 % -> back"

    def recover(self, soak: Soak, event: Injection) -> None:
        soak.set_share(self.share)


class BackendLatency(Fault):
    """The instance answers slowly (the fault API's added latency)."""
    name = "backend-latency"

    def inject(self, soak: Soak, event: Injection) -> None:
        soak.fault_api("PUT", {"latency_ms": self.gate.latency_ms})
        event.detail = f"{soak.victim}: +{self.gate.latency_ms} ms on every request"

    def recover(self, soak: Soak, event: Injection) -> None:
        soak.fault_api("DELETE")


class BackendUnhealthy(Fault):
    """The instance fails its health check while it still serves: HAProxy
    takes it out (its checks), NGINX keeps it (it has none)."""
    name = "backend-unhealthy"

    def inject(self, soak: Soak, event: Injection) -> None:
        soak.fault_api("PUT", {"health": "fail"})
        wait_for(lambda: soak.haproxy_says("DOWN"), 60, f"HAProxy to mark {soak.victim} down on every node")
        event.detail = f"{soak.victim}: health check fails"

    def recover(self, soak: Soak, event: Injection) -> None:
        soak.fault_api("DELETE")
        wait_for(soak.whole, 90, f"{soak.victim} healthy behind both balancers on every node", interval=0.5)


class ScaleOutIn(Fault):
    """One stable instance more, then back (the CLI's reconciler)."""
    name = "scale-out-in"

    def _to(self, soak: Soak, count: int) -> None:
        target = soak.target
        desired = backend_changes.with_stable_count(copy.deepcopy(backend_changes.current(target)), count,
                                                    instances.LabInstances().spares())
        backend_changes.reconcile(target, desired, lambda _: None)

    def inject(self, soak: Soak, event: Injection) -> None:
        self.count = len(backend_changes.current(soak.target).backends)
        self._to(soak, self.count + 1)
        event.detail = f"{self.count} -> {self.count + 1} -> {self.count} stable instances"

    def recover(self, soak: Soak, event: Injection) -> None:
        self._to(soak, self.count)


class RollingUpdate(Fault):
    """Every stable instance replaced by a new release, one at a time
    (drain, replace, health, enable: the CLI's reconciler), then back."""
    name = "rolling-update"

    def _releases(self, soak: Soak, release_of) -> None:
        target = soak.target
        desired = backend_changes.current(target)
        for b in desired.backends:
            desired.releases[b["name"]] = release_of(b["name"])
        backend_changes.reconcile(target, desired, lambda _: None)

    def inject(self, soak: Soak, event: Injection) -> None:
        before = backend_changes.current(soak.target)
        self.before = {b["name"]: before.release(b["name"]) for b in before.backends}
        release = f"soak-{int(event.started)}"
        self._releases(soak, lambda name: release)
        event.detail = f"{len(self.before)} stable instances -> {release} -> back, one at a time"

    def recover(self, soak: Soak, event: Injection) -> None:
        self._releases(soak, lambda name: self.before[name])


class AddressMove(Fault):
    """The floating address moves, and the node it left is back as a
    backup after `hold`.  A keep-alive connection through the address breaks
    at its next request once the address is elsewhere (the new holder has
    no such connection and resets it): at most one failed request per user
    of the address, who then connects again."""

    def _move(self, soak: Soak, event: Injection) -> None:
        raise NotImplementedError

    def inject(self, soak: Soak, event: Injection) -> None:
        self.holder = soak.holder()
        self._move(soak, event)
        wait_for(lambda: soak._holders() not in ([], [self.holder]), 30, f"the floating address to leave {self.holder}")
        event.bound_reason = "one request per user of the floating address, whose connection the move broke"

    def back(self, soak: Soak) -> None:
        wait_for(soak.settled, 90, "one MASTER holding the address and every other node a BACKUP", interval=0.5)
        wait_for(lambda: all(soak.lab.workers(e, "nginx") for e in soak.lab.edges), 30, "NGINX serving on every node")


class LbStopHolder(AddressMove):
    """HAProxy stopped on the node holding the floating address: keepalived
    goes down with it (systemd binds them) and the other node takes over."""
    name = "lb-stop-holder"

    def _move(self, soak: Soak, event: Injection) -> None:
        edge = next(e for e in soak.lab.edges if e["name"] == self.holder)
        soak.lab.ssh(edge, "systemctl stop haproxy")
        event.excluded = [f"{self.holder}/haproxy"]
        event.bound = soak.vip_users()
        event.detail = f"HAProxy stopped on {self.holder}, the holder"

    def recover(self, soak: Soak, event: Injection) -> None:
        edge = next(e for e in soak.lab.edges if e["name"] == self.holder)
        soak.lab.ssh(edge, "systemctl start haproxy keepalived")
        self.back(soak)


class EdgeFreeze(AddressMove):
    """The node holding the floating address frozen (every process
    stopped, as a hung VM): the other node takes the address after missed
    advertisements.  Thawed, the node outranks it and takes the address
    back: two moves, each breaking the connections through the address."""
    name = "edge-freeze"

    def _move(self, soak: Soak, event: Injection) -> None:
        podman("pause", soak.nodes[self.holder].container)
        event.excluded = [f"{self.holder}/nginx", f"{self.holder}/haproxy"]
        event.bound = 2 * soak.vip_users()
        event.detail = f"{self.holder}, the holder, frozen"

    def inject(self, soak: Soak, event: Injection) -> None:
        super().inject(soak, event)
        event.bound_reason = ("two requests per user of the floating address (it moves away, then back), "
                              "each on a connection the move broke")

    def recover(self, soak: Soak, event: Injection) -> None:
        podman("unpause", soak.nodes[self.holder].container)
        self.back(soak)


class PrometheusRestart(Fault):
    """The monitoring restarts: traffic must not notice, and every target
    must be scraped again."""
    name = "prometheus-restart"

    def inject(self, soak: Soak, event: Injection) -> None:
        podman("restart", "-t", "10", soak.info["prometheus"]["container"], timeout=60)
        event.detail = "Prometheus restarted"

    def recover(self, soak: Soak, event: Injection) -> None:
        def scraping() -> bool:
            try:
                up = soak.prometheus.query("min(up)")
            except PrometheusError:
                return False
            return bool(up) and float(up[0]["value"][1]) == 1.0
        wait_for(scraping, 120, "Prometheus back and scraping every target", interval=1)


CATALOGUE: dict[str, type[Fault]] = {f.name: f for f in (BackendKill, LbReload, CanaryStep, BackendLatency,
                                                          BackendUnhealthy, ScaleOutIn, RollingUpdate,
                                                          LbStopHolder, EdgeFreeze, PrometheusRestart)}
