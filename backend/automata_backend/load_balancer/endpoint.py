"""An endpoint: its address, HTTP connection pool, breaker, health and load."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import httpx

from .breaker import CLOSED, Breaker
from .errors import ConfigError

# host:port, or [v6]:port.  Hosts are DNS names or addresses; nothing else
# (no scheme, no path) so a typo cannot turn into a request to a surprise URL.
_ADDRESS = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>\d{1,5})$")

# Cost of an endpoint that has requests in flight but has never answered:
# high enough that it gets no second request before its first one returns
# (Finagle's rule), so a new or restarted endpoint is tried gently.
UNMEASURED_PENALTY = 1e6


@dataclass(frozen=True, order=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, field: str = "address") -> Address:
        m = _ADDRESS.match(text.strip())
        if not m:
            raise ConfigError(field, f"{text!r} is not host:port (e.g. 10.0.0.7:8000 or [::1]:8000)")
        port = int(m["port"])
        if not 1 <= port <= 65535:
            raise ConfigError(field, f"{text!r}: port must be 1-65535")
        return cls(m["v6"] or m["host"], port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self}"


class Endpoint:
    """Mutable state of one endpoint, read on every pick, so plain slots."""

    __slots__ = (
        "address",
        "breaker",
        "check_failures",
        "check_successes",
        "children",
        "client",
        "decay",
        "ewma",
        "healthy",
        "inflight",
        "name",
        "removing",
        "stamp",
    )

    def __init__(self, address: Address, client: httpx.AsyncClient, breaker: Breaker,
                 decay: float, now: float) -> None:
        self.address = address
        self.name = str(address)
        self.client = client
        self.breaker = breaker
        self.healthy = True  # until active checks say otherwise: new endpoints get traffic at once
        self.removing = False
        self.inflight = 0
        # Peak EWMA of response time (seconds).  0.0 means "never answered".
        self.ewma = 0.0
        self.stamp = now
        self.decay = decay
        self.check_failures = 0
        self.check_successes = 0
        self.children: dict = {}  # prometheus children, bound once (labels() is not free)

    def pickable(self, now: float) -> bool:
        return self.healthy and not self.removing and (
            self.breaker.state == CLOSED or self.breaker.allows(now))

    def cost(self, now: float) -> float:
        """Peak-EWMA load: expected latency times the queue it would join.

        Reading decays the estimate towards zero (as if a 0 s sample came
        in), so an endpoint shunned for being slow is eventually tried again
        and its real latency measured afresh.
        """
        elapsed = now - self.stamp
        if elapsed > 0:
            self.ewma *= math.exp(-elapsed / self.decay)
            self.stamp = now
        if self.ewma == 0.0 and self.inflight:
            return UNMEASURED_PENALTY
        return self.ewma * (self.inflight + 1)

    def observe(self, rtt: float, now: float) -> None:
        """Peak-sensitive: a slower sample replaces the estimate at once, a
        faster one only pulls it down with the decay (Finagle, Linkerd)."""
        if rtt > self.ewma:
            self.ewma = rtt
        else:
            w = math.exp(-max(now - self.stamp, 0.0) / self.decay)
            self.ewma = self.ewma * w + rtt * (1.0 - w)
        self.stamp = now
