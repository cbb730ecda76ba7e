"""Picking strategies.  Each gets the endpoints that may take a call right
now (never empty) and returns one; they run on every call, so they stay
allocation-free and O(n) at worst.  docs/client-load-balancing.md says when
to choose which."""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterable, Sequence

from .endpoint import Endpoint
from .errors import ConfigError


class RoundRobin:
    """Each endpoint in turn.  Fair in requests, blind to how busy or slow
    an endpoint is: a slow one gets its full share and its queue grows."""

    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def pick(self, endpoints: Sequence[Endpoint], now: float) -> Endpoint:
        self._next += 1
        return endpoints[self._next % len(endpoints)]


class LeastOutstanding:
    """The endpoint with the fewest calls in flight from this client.  Ties
    rotate, so an idle pool is still spread evenly."""

    name = "least_outstanding"

    def __init__(self) -> None:
        self._start = 0

    def pick(self, endpoints: Sequence[Endpoint], now: float) -> Endpoint:
        n = len(endpoints)
        self._start = start = (self._start + 1) % n
        best = endpoints[start]
        fewest = best.inflight
        for i in range(1, n):
            e = endpoints[(start + i) % n]
            if e.inflight < fewest:
                best, fewest = e, e.inflight
        return best


class PeakEwmaP2C:
    """Power of two choices over peak-EWMA cost (Finagle's and Linkerd's
    default): sample two endpoints at random, take the cheaper one, where
    cost = latency estimate x (calls in flight + 1).  Two random choices
    avoid the herd that "always the best" causes when many clients share
    the same view, at O(1) per pick."""

    name = "p2c_ewma"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._random = (rng or random.Random()).random

    def pick(self, endpoints: Sequence[Endpoint], now: float) -> Endpoint:
        n = len(endpoints)
        if n == 1:
            return endpoints[0]
        rand = self._random
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        a, b = endpoints[i], endpoints[j]
        return a if a.cost(now) <= b.cost(now) else b


def _hash(text: str) -> int:
    # Stable across processes and restarts (unlike hash()), so every client
    # instance maps a key to the same endpoint.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Consistent hashing with `replicas` points per endpoint: when an
    endpoint joins or leaves, only the keys on its arcs move."""

    def __init__(self, replicas: int = 100) -> None:
        self.replicas = replicas
        self._points: list[int] = []
        self._owners: list[Endpoint] = []

    def rebuild(self, endpoints: Iterable[Endpoint]) -> None:
        ring = sorted((_hash(f"{e.name}#{i}"), e.name, e) for e in endpoints for i in range(self.replicas))
        self._points = [point for point, _, _ in ring]
        self._owners = [owner for _, _, owner in ring]

    def pick(self, key: str, allowed: Sequence[Endpoint]) -> Endpoint | None:
        """The key's endpoint, or the next one clockwise that is allowed
        (ejected, unhealthy or already-tried endpoints are skipped, and
        their keys come back when they do)."""
        points, owners = self._points, self._owners
        if not points:
            return None
        start = bisect.bisect(points, _hash(key))
        size = len(points)
        for step in range(size):
            owner = owners[(start + step) % size]
            if owner in allowed:
                return owner
        return None


STRATEGIES = {cls.name: cls for cls in (RoundRobin, LeastOutstanding, PeakEwmaP2C)}
# consistent_hash: keyed calls use the ring; calls without a key use p2c_ewma.
CONSISTENT_HASH = "consistent_hash"
STRATEGY_NAMES = (*STRATEGIES, CONSISTENT_HASH)


def make_strategy(name: str, rng: random.Random | None = None):
    if name == CONSISTENT_HASH:
        return PeakEwmaP2C(rng)
    if name not in STRATEGIES:
        raise ConfigError("strategy", f"unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}")
    return PeakEwmaP2C(rng) if name == PeakEwmaP2C.name else STRATEGIES[name]()
