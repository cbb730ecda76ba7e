"""Watching a floating address (roles/edge_vip) on lab-made nodes: who holds
it, what keepalived says, when it moved, and what a client saw meanwhile.

Used by the lab's own tests (tests/lab/test_vip.py) and by the separate
failover experiment (tests/vip).  Nodes are reached with `podman exec`, not
SSH: the timings must not wait for a login.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .podman import podman
from automata_lb.wait import until


@dataclass
class Node:
    """One node of a VRRP group, as its container sees itself."""

    name: str
    container: str
    vip: str
    interface: str = "eth0"

    def sh(self, command: str, check: bool = True) -> str:
        return podman("exec", self.container, "sh", "-c", command, check=check).stdout

    def holds_vip(self) -> bool:
        return f" {self.vip}/" in self.sh(f"ip -4 -o addr show dev {self.interface}")

    def state(self) -> dict[str, str]:
        """The notify script's state file: state=, instance=, priority=, since=."""
        text = self.sh("cat /run/keepalived/state 2>/dev/null || true")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def start_address_monitor(self) -> None:
        """Timestamped address events (`ip -ts monitor address`), kept on the node."""
        self.sh("pkill -f '[i]p -ts monitor address' || true; rm -f /run/vip-monitor.log")
        podman("exec", "-d", self.container, "sh", "-c",
               f"TZ=UTC exec ip -ts monitor address dev {self.interface} >/run/vip-monitor.log 2>&1")
        until(lambda: self.sh("pgrep -f '[i]p -ts monitor address' || true").strip(), 5,
              f"address monitor on {self.name}")

    def address_events(self) -> list[tuple[float, str]]:
        """[(unix time, "added"|"deleted")] for the virtual address."""
        events = []
        for line in self.sh("cat /run/vip-monitor.log 2>/dev/null || true").splitlines():
            if f" {self.vip}/" not in line or not line.startswith("["):
                continue
            stamp = datetime.fromisoformat(line[1:line.index("]")]).replace(tzinfo=UTC).timestamp()
            events.append((stamp, "deleted" if "Deleted" in line else "added"))
        return events

    def first_event(self, kind: str, after: float, timeout: float) -> float:
        """Seconds from `after` (unix time) to the node's first `kind` event."""
        def find():
            stamps = [t for t, k in self.address_events() if k == kind and t >= after - 0.05]
            return stamps[0] if stamps else None
        return until(find, timeout, f"address {kind} on {self.name}") - after


@dataclass
class Prober:
    """Requests to the virtual address from this machine, one new connection
    every `interval` seconds, each outcome recorded: what a client sees.

    A new connection each time: a failover breaks every open connection
    anyway, and a fresh one shows when the address answers again."""

    vip: str
    port: int
    path: str
    interval: float = 0.05
    timeout: float = 0.3
    outcomes: list[tuple[float, float, bool]] = field(default_factory=list)  # (started, ended, ok)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _once(self) -> bool:
        request = f"GET {self.path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n".encode()
        try:
            with socket.create_connection((self.vip, self.port), timeout=self.timeout) as s:
                s.sendall(request)
                return s.recv(12).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            ok = self._once()
            self.outcomes.append((started, time.time(), ok))
            self._stop.wait(self.interval)

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def wait_served(self, count: int, since: float = 0.0, timeout: float = 30.0) -> None:
        """Wait until the last `count` probes sent after `since` were all
        answered: clients are served (again), steadily."""
        def served() -> bool:
            after = [ok for started, _, ok in list(self.outcomes) if started >= since]
            return len(after) >= count and all(after[-count:])
        until(served, timeout, f"{count} answered probes in a row on {self.vip}:{self.port}")

    def failures_after(self, t0: float) -> int:
        return sum(1 for started, _, ok in self.outcomes if started >= t0 and not ok)

    def outage_after(self, t0: float) -> float:
        """Seconds from t0 until the answer of the first request that
        succeeded after the last failed one (0 if none failed).  A request
        waiting for ARP to resolve the moved address counts as failing until
        it is answered."""
        after = [o for o in self.outcomes if o[0] >= t0]
        failures = [started for started, _, ok in after if not ok]
        if not failures:
            return 0.0
        recovered = [ended for started, ended, ok in after if ok and started > failures[-1]]
        assert recovered, "the virtual address never answered again"
        return recovered[0] - t0
