"""The lab's autoscaler: what an HPA does in a cluster, for the lab's
containers, so scaling is visible without one.

The signal is connections in flight per stable instance (HTTP requests and
WebSockets, `automata_active_connections`), read from Prometheus: on a
2-core machine CPU says more about the load generator than about the
backends.  Scale-ups act at once; a scale-down waits until the signal has
asked for fewer instances for the whole cool-down, so a pause in the load
does not flap the pool.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from .prom import Prometheus
from .targets import ROOT

PIDFILE = ROOT / ".lab" / "autoscaler.pid"
INFLIGHT = 'sum(automata_active_connections{job="backend", version="stable"})'


@dataclass(frozen=True)
class Policy:
    min_replicas: int
    max_replicas: int
    target_inflight: float      # per instance
    cooldown_s: float
    interval_s: float


def desired(inflight: float, policy: Policy) -> int:
    wanted = math.ceil(inflight / policy.target_inflight) if inflight > 0 else policy.min_replicas
    return max(policy.min_replicas, min(policy.max_replicas, wanted))


class Autoscaler:
    def __init__(self, prom: Prometheus, policy: Policy, replicas: Callable[[], int],
                 scale_to: Callable[[int], None], say: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prom, self.policy, self.replicas, self.scale_to, self.say = prom, policy, replicas, scale_to, say
        self.clock = clock
        self.below_since: float | None = None

    def step(self) -> int | None:
        """One evaluation; returns the new replica count when it scaled."""
        result = self.prom.query(INFLIGHT)
        inflight = float(result[0]["value"][1]) if result else 0.0
        have, want = self.replicas(), desired(inflight, self.policy)
        now = self.clock()
        self.say(f"in flight {inflight:.0f} over {have} instances; wanted {want}")
        if want > have:
            self.below_since = None
            self.scale_to(want)
            return want
        if want < have:
            self.below_since = self.below_since if self.below_since is not None else now
            if now - self.below_since >= self.policy.cooldown_s:
                self.below_since = None
                self.scale_to(want)
                return want
            self.say(f"holding {have} for the cool-down ({now - self.below_since:.0f}/{self.policy.cooldown_s:.0f}s)")
            return None
        self.below_since = None
        return None

    def run(self, duration_s: float | None) -> None:
        PIDFILE.write_text(str(os.getpid()))
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
        try:
            deadline = None if duration_s is None else self.clock() + duration_s
            while not stop and (deadline is None or self.clock() < deadline):
                self.step()
                end = self.clock() + self.policy.interval_s
                while not stop and self.clock() < end:
                    time.sleep(0.2)
        finally:
            PIDFILE.unlink(missing_ok=True)


def stop_running() -> bool:
    """SIGTERM to an autoscaler this checkout runs; False when none runs."""
    if not PIDFILE.exists():
        return False
    try:
        os.kill(int(PIDFILE.read_text()), signal.SIGTERM)
    except (ProcessLookupError, ValueError):
        PIDFILE.unlink(missing_ok=True)
        return False
    return True
