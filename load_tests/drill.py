"""The fault drill: while the mixed load runs, reload both load balancers
on every edge node, shift HAProxy's canary share, kill a backend instance
and bring it back (and, in the full drill, stop one gracefully), then count
the failed requests in each event's window.

Bounds (docs/load-tests.md):
- a reload, a canary shift, a drain, a return: zero failed requests;
- a kill: at most the requests the instance had in flight when it died
  (HTTP requests plus open WebSockets, read from its own
  `automata_active_connections` gauge every 20 ms until it stopped
  answering).  A balancer may retry an idempotent request that was in
  flight, so fewer is normal; more means the tier lost requests it never
  sent to the dead instance.

Everything it changes is put back in a `finally`, and the drill waits
(polling) until the lab is whole again.  Failures are read from the Locust
run's summary.json (each with its time), so the drill itself never touches
the load.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from automata_lb import edge as edge_ops
from automata_lb import targets
from automata_lb.targets import TargetError
from lab.podman import podman
from automata_lb.wait import until

# Time after an event during which its consequences are still its own:
# keep-alive connections closed by a reload are reopened, a shifted share
# is served.  The window of an event runs until the next event starts.
SETTLE_S = 3.0
# Probe requests of the drill itself carry addresses from TEST-NET-3, never
# one of the simulated users' (198.18.0.0/15).
_probe_addresses = (f"203.0.113.{n}" for n in itertools.cycle(range(1, 255)))


class DrillError(RuntimeError):
    """The lab did not do what the drill asked in time."""


@dataclass
class Event:
    name: str
    started: float            # time.time() when the action began
    done: float = 0.0         # when the action (and its own wait) finished
    bound: int = 0            # most failed requests allowed in its window
    bound_reason: str = "hitless by design"
    detail: str = ""
    window_end: float = 0.0   # the next event's start (or the end of the load)
    requests: int = 0
    failures: int = 0
    rate_limited: int = 0
    failures_by_target: dict[str, int] = field(default_factory=dict)
    failure_examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failures <= self.bound


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.3):
    return until(predicate, timeout, what, interval=interval, error=DrillError)


class Lab:
    """The few things the drill does to the lab: SSH to edge nodes, HAProxy's
    runtime API, podman on backends, probes through NGINX."""

    def __init__(self, lab: dict) -> None:
        self.lab = lab
        self.edges = lab["edges"]
        self.nodes = {node.name: node for node in targets.lab().edges}
        self.backends = {b["name"]: b for b in lab["backends"]}
        self.ca = lab["credentials"]["ca_cert"]

    def ssh(self, edge: dict, command: str, timeout: float = 30) -> str:
        # The node as the CLI reaches it (automata_lb.targets: the lab's own
        # SSH settings, one connection per node).
        try:
            proc = self.nodes[edge["name"]].run(command, timeout=timeout)
        except TargetError as exc:
            raise DrillError(str(exc)) from exc
        if proc.returncode != 0:
            raise DrillError(f"{edge['name']}: `{command}` failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def runtime(self, edge: dict, *commands: str) -> str:
        """HAProxy's runtime API on the node, through the CLI's one client."""
        try:
            return edge_ops.runtime(self.nodes[edge["name"]], *commands)
        except TargetError as exc:
            raise DrillError(str(exc)) from exc

    def server_status(self, edge: dict, server: str) -> dict[str, str]:
        """HAProxy's status of one server in every pool that holds it (UP, DOWN, ...)."""
        rows = edge_ops.stat_rows(self.runtime(edge, "show stat"))
        return {r["pxname"]: r["status"] for r in rows if r["svname"] == server}

    def workers(self, edge: dict, service: str) -> set[str]:
        master = "$(cat /run/nginx.pid)" if service == "nginx" else "$(systemctl show -p MainPID --value haproxy)"
        return set(self.ssh(edge, f"pgrep -P {master} || true").split())

    def canary_share(self, edge: dict) -> int:
        try:
            return edge_ops.haproxy_canary_share(self.nodes[edge["name"]])
        except TargetError as exc:
            raise DrillError(str(exc)) from exc

    def set_canary_share(self, edge: dict, share: int) -> None:
        try:
            edge_ops.set_haproxy_canary_share(self.nodes[edge["name"]], share)
        except TargetError as exc:
            raise DrillError(str(exc)) from exc

    def container_running(self, name: str) -> bool:
        out = podman("container", "inspect", "-f", "{{.State.Running}}", self.backends[name]["container"],
                     check=False).stdout.strip()
        return out == "true"

    def nginx_reaches(self, edge: dict, instance: str, tries: int = 6) -> bool:
        """Does NGINX on this edge send round-robin API traffic to `instance`?"""
        with httpx.Client(base_url=edge["endpoints"]["nginx_https"], verify=self.ca, timeout=5) as client:
            for _ in range(tries):
                try:
                    r = client.get("/api/drill-probe", headers={"x-forwarded-for": next(_probe_addresses)})
                except httpx.HTTPError:
                    return False
                if r.headers.get("x-backend-instance") == instance:
                    return True
        return False

    def healthy_everywhere(self, instance: str) -> bool:
        """Back behind both balancers on every edge: UP in HAProxy's pools,
        answering through NGINX."""
        for edge in self.edges:
            if set(self.server_status(edge, instance).values()) != {"UP"}:
                return False
        return all(self.nginx_reaches(edge, instance) for edge in self.edges)


class InFlightSampler:
    """Reads an instance's in-flight gauge every 20 ms until it stops answering."""

    def __init__(self, metrics_url: str) -> None:
        self.url = metrics_url
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        failures = 0
        with httpx.Client(timeout=0.5) as client:
            while not self._stop.is_set() and failures < 3:
                try:
                    text = client.get(self.url).text
                    value = next(float(line.split()[1]) for line in text.splitlines()
                                 if line.startswith("automata_active_connections "))
                    # The gauge counts this scrape too.
                    self.samples.append((time.time(), max(int(value) - 1, 0)))
                    failures = 0
                except (httpx.HTTPError, StopIteration):
                    failures += 1
                time.sleep(0.02)

    def start(self) -> InFlightSampler:
        self._thread.start()
        wait_for(lambda: self.samples, 5, f"reading {self.url}")
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def at_death(self, since: float) -> int:
        """The most the instance had in flight from `since` (just before the
        kill was issued) to its last answer."""
        recent = [v for t, v in self.samples if t >= since]
        return max(recent or [self.samples[-1][1]])


class Drill:
    def __init__(self, lab: dict, victim: str = "backend-2", full: bool = False,
                 log: Callable[[str], None] = print) -> None:
        self.lab = Lab(lab)
        if victim not in self.lab.backends or self.lab.backends[victim]["version"] != "stable":
            stable = [n for n, b in self.lab.backends.items() if b["version"] == "stable"]
            raise ValueError(f"--victim {victim}: not a stable backend of the lab (have: {', '.join(stable)})")
        self.victim = victim
        self.full = full
        self.log = log
        self.events: list[Event] = []
        self._canary_before: dict[str, int] = {}

    # -- events ---------------------------------------------------------------

    def _event(self, name: str) -> Event:
        event = Event(name, time.time())
        self.events.append(event)
        self.log(f"drill: {name}")
        return event

    def reload(self, service: str) -> None:
        event = self._event(f"reload {service} on {', '.join(e['name'] for e in self.lab.edges)}")
        for edge in self.lab.edges:
            before = self.lab.workers(edge, service)
            self.lab.ssh(edge, f"systemctl reload {service}")
            # Proof that it happened: a worker that was not there before.
            wait_for(lambda edge=edge, before=before: self.lab.workers(edge, service) - before, 30,
                     f"new {service} workers on {edge['name']}")
        event.done = time.time()
        event.detail = "new workers on every node"

    def canary_shift(self, percent: int = 50, hold: float = SETTLE_S) -> None:
        for edge in self.lab.edges:
            self._canary_before[edge["name"]] = self.lab.canary_share(edge)
        before = sorted(set(self._canary_before.values()))
        event = self._event(f"canary share {'/'.join(map(str, before))} % -> {percent} % -> back")
        for edge in self.lab.edges:
            self.lab.set_canary_share(edge, percent)
            if self.lab.canary_share(edge) != percent:
                raise DrillError(f"{edge['name']}: the canary share did not change to {percent} %")
        time.sleep(hold)  # time is the input here: the shifted share serves traffic
        self._restore_canary()
        event.done = time.time()
        event.detail = f"HAProxy's canary share at runtime on {len(self.lab.edges)} nodes"

    def kill(self) -> None:
        backend = self.lab.backends[self.victim]
        sampler = InFlightSampler(f"{backend['endpoints']['app']}/metrics").start()
        time.sleep(0.5)  # a short history before the kill
        event = self._event(f"kill {self.victim} (SIGKILL)")
        issued = time.time()
        podman("kill", backend["container"])
        wait_for(lambda: not self.lab.container_running(self.victim), 30, f"{self.victim} to die")
        sampler.stop()
        in_flight = sampler.at_death(issued - 0.5)
        event.bound = in_flight
        event.bound_reason = "requests in flight on the instance when it died"
        # The balancers noticed: HAProxy's checks took it out on every node.
        self._wait_down()
        event.done = time.time()
        event.detail = f"{in_flight} in flight at death; HAProxy marked it down after {event.done - issued:.1f} s"

    def drain(self) -> None:
        """A graceful stop (SIGTERM, as Kubernetes sends): the instance stops
        accepting, finishes what it holds and closes WebSockets with 1001."""
        backend = self.lab.backends[self.victim]
        event = self._event(f"drain {self.victim} (SIGTERM, graceful)")
        podman("stop", "-t", "40", backend["container"], timeout=60)
        self._wait_down()
        event.done = time.time()
        event.detail = f"stopped after {event.done - event.started:.1f} s"

    def _wait_down(self) -> None:
        """The balancers noticed: HAProxy's checks took the instance out of
        every pool on every node."""
        def down() -> bool:
            return all(states and all(v.startswith("DOWN") for v in states.values())
                       for states in (self.lab.server_status(e, self.victim) for e in self.lab.edges))
        wait_for(down, 60, f"HAProxy to mark {self.victim} down on every node")

    def bring_back(self) -> None:
        backend = self.lab.backends[self.victim]
        event = self._event(f"bring back {self.victim}")
        podman("start", backend["container"])
        wait_for(lambda: self.lab.healthy_everywhere(self.victim), 90,
                 f"{self.victim} healthy behind both balancers on every node", interval=0.5)
        event.done = time.time()
        event.detail = f"healthy behind both balancers on every node after {event.done - event.started:.1f} s"

    # -- the whole drill ---------------------------------------------------------

    def preflight(self) -> None:
        """Refuse to start on a lab that is not whole: the drill would blame
        its events for someone else's disturbance."""
        if not self.lab.container_running(self.victim):
            raise DrillError(f"{self.victim} is not running")
        wait_for(lambda: self.lab.healthy_everywhere(self.victim), 60,
                 f"{self.victim} healthy behind both balancers before the drill")

    def run(self, baseline: float = SETTLE_S) -> None:
        """The events in order, each followed by SETTLE_S of plain load."""
        event = self._event("baseline (no event)")
        time.sleep(baseline)
        event.done = time.time()
        steps = [lambda: self.reload("nginx"), lambda: self.reload("haproxy"), self.canary_shift,
                 self.kill, self.bring_back]
        if self.full:
            steps += [self.drain, self.bring_back]
        for step in steps:
            step()
            time.sleep(SETTLE_S)  # time is the input: the event's aftermath is part of its window

    def restore(self) -> list[str]:
        """Put back everything the drill may have changed; return what was done."""
        done = []
        if self._canary_before:
            self._restore_canary()
            done.append("canary share")
        if not self.lab.container_running(self.victim):
            podman("start", self.lab.backends[self.victim]["container"])
            done.append(f"started {self.victim}")
        wait_for(lambda: self.lab.healthy_everywhere(self.victim), 90,
                 f"{self.victim} healthy behind both balancers after the drill", interval=0.5)
        return done

    def _restore_canary(self) -> None:
        for edge in self.lab.edges:
            if edge["name"] in self._canary_before:
                self.lab.set_canary_share(edge, self._canary_before[edge["name"]])

    # -- judging -------------------------------------------------------------------

    def judge(self, summary: dict, load_end: float) -> list[Event]:
        """Count the run's requests and failures in each event's window."""
        for event, following in zip(self.events, [*self.events[1:], None], strict=True):
            event.window_end = following.started if following else load_end
            event.requests, event.rate_limited, failed = in_window(summary, event.started, event.window_end)
            event.failures = len(failed)
            event.failures_by_target = dict(Counter(target for *_, target in failed))
            event.failure_examples = [f"{target}: {name}: {error}" for _, _, name, error, target in failed[:8]]
        return self.events


def in_window(summary: dict, start: float, end: float) -> tuple[int, int, list[list]]:
    """A Locust run's (requests, rate-limited, failures) from `start` to `end`.
    Counts are per second: each second goes to the window it starts in."""
    requests = limited = 0
    for second, n, _failures, n_limited in summary["timeline"]:
        if int(start) <= second < int(end):
            requests += n
            limited += n_limited
    return requests, limited, [f for f in summary["failure_log"] if start <= f[0] < end]


def format_events(events: list[Event]) -> str:
    header = ["event", "window s", "requests", "failed", "by target", "bound", "result"]
    rows = [[e.name, f"{e.window_end - e.started:.1f}", str(e.requests), str(e.failures),
             " ".join(f"{t}:{n}" for t, n in sorted(e.failures_by_target.items())) or "-", str(e.bound),
             "ok" if e.ok else "BROKEN"] for e in events]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    reasons = {}
    for e in events:
        reasons.setdefault(e.bound_reason, []).append(e.name.split(" ")[0])
    lines += ["", "bound: " + "; ".join(f"{', '.join(dict.fromkeys(names))}: {reason}"
                                      for reason, names in reasons.items())]
    for e in events:
        if e.detail:
            lines.append(f"  {e.name}: {e.detail}")
        for example in e.failure_examples:
            lines.append(f"    failed: {example}")
    broken = [e.name for e in events if not e.ok]
    lines += ["", "DRILL: PASS" if not broken else f"DRILL: FAIL ({', '.join(broken)})"]
    return "\n".join(lines)


def write(events: list[Event], directory: Path, restored: list[str]) -> str:
    text = format_events(events)
    (directory / "drill.txt").write_text(text + "\n")
    (directory / "drill.json").write_text(json.dumps(
        {"events": [{**asdict(e), "ok": e.ok} for e in events], "restored": restored,
         "passed": all(e.ok for e in events)}, indent=1))
    return text
