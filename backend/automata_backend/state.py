"""Per-instance state: settings, injected faults, the simulated downstream
circuit breaker and database pool, and the client-side balancer of the
AI pool.

Nothing here is global, so tests can build several instances in one process.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .errors import InvalidField
from .tuning import Tuning

__all__ = ["Backend", "CircuitBreaker", "DbPool", "InvalidField", "PoolTimeout", "Refusal", "Settings"]

# Header values must stay plain tokens: they are echoed in X-Backend-* headers
# and used as Prometheus-friendly identifiers by the lab.
_TOKEN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class Settings:
    instance: str
    version: str
    grace_period: float = 30.0
    # Beyond this many concurrent requests/WebSockets the traffic classes answer
    # 503 quickly instead of queueing without bound behind a slow instance.
    max_connections: int = 1000

    def __post_init__(self) -> None:
        for field in ("instance", "version"):
            if not _TOKEN.match(getattr(self, field)):
                raise InvalidField(field, "must be 1-64 characters of A-Z a-z 0-9 . _ -")
        if not self.grace_period > 0:
            raise InvalidField("grace_period", f"must be > 0 seconds, got {self.grace_period}")
        if self.max_connections < 1:
            raise InvalidField("max_connections", f"must be >= 1, got {self.max_connections}")


DEFAULT_FAULTS = {"error_rate": 0.0, "error_status": 500, "latency_ms": 0, "health": "ok"}
MAX_LATENCY_MS = 600_000


def _number(value: object) -> bool:
    # bool is an int subclass; `true` is never a valid rate or status.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_faults(update: object) -> dict:
    """Check a PUT /fault body and return it; raise InvalidField naming the key."""
    if not isinstance(update, dict):
        raise InvalidField("body", "must be a JSON object")
    for key, value in update.items():
        if key not in DEFAULT_FAULTS:
            raise InvalidField(key, f"unknown fault; known: {', '.join(DEFAULT_FAULTS)}")
        if key == "error_rate" and not (_number(value) and 0.0 <= value <= 1.0):
            raise InvalidField(key, f"must be a number between 0.0 and 1.0, got {value!r}")
        if key == "error_status" and not (isinstance(value, int) and not isinstance(value, bool)
                                          and 500 <= value <= 599):
            raise InvalidField(key, f"must be an integer 5xx status, got {value!r}")
        if key == "latency_ms" and not (isinstance(value, int) and not isinstance(value, bool)
                                        and 0 <= value <= MAX_LATENCY_MS):
            raise InvalidField(key, f"must be an integer between 0 and {MAX_LATENCY_MS}, got {value!r}")
        if key == "health" and value not in ("ok", "fail"):
            raise InvalidField(key, f"must be \"ok\" or \"fail\", got {value!r}")
    return update


class CircuitBreaker:
    """Breaker in front of the simulated downstream (Application Tuning values).

    Opens after `failure_threshold` consecutive downstream failures; while open,
    traffic fails fast; after `recovery_timeout` seconds it lets requests
    through again (half-open) and the first result closes or re-opens it.
    """

    def __init__(self, failure_threshold: int = 5, recovery_timeout: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self._clock = clock
        self.consecutive_failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.recovery_timeout:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        return self.state != "open"

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self._opened_at = None

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.state == "half_open" or self.consecutive_failures >= self.failure_threshold:
            self._opened_at = self._clock()


class PoolTimeout(Exception):
    pass


class DbPool:
    """Simulated connection pool: `pool_size` connections kept warm, at most
    `max_connections` checked out, waiting up to `pool_timeout` for a slot."""

    def __init__(self, max_connections: int = 100, pool_size: int = 20, pool_timeout: float = 30.0) -> None:
        self.max_connections = max_connections
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self.active = 0
        self.idle = pool_size
        self._slots = asyncio.Semaphore(max_connections)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.pool_timeout)
        except TimeoutError:
            raise PoolTimeout from None
        self.idle = max(self.idle - 1, 0)
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            # Connections opened beyond pool_size (overflow) are closed on return.
            self.idle = min(self.idle + 1, self.pool_size)
            self._slots.release()


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


class Backend:
    """Everything one instance knows; shared by its main and admin apps."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic,
                 tuning: Tuning | None = None) -> None:
        self.settings = settings
        self.tuning = tuning = tuning or Tuning()
        self.clock = clock
        self.started = clock()
        self.faults = dict(DEFAULT_FAULTS)
        self.breaker = self._new_breaker()
        self.pool = DbPool(tuning.max_connections, tuning.pool_size, tuning.pool_timeout)
        # The AI pool this instance calls (/api/ai/...), when it has one.
        self.ai_pool = tuning.ai_balancer()
        self.rng = random.Random()
        self.draining = False
        self.drain_started = asyncio.Event()
        self.active = 0  # HTTP requests in flight + open WebSockets
        self.inflight_http = 0
        self.websockets_open = 0

    @property
    def uptime(self) -> float:
        return self.clock() - self.started

    def readiness(self) -> str:
        if self.draining:
            return "draining"
        if self.faults["health"] == "fail":
            return "unhealthy"
        return "healthy"

    def update_faults(self, update: object) -> dict:
        self.faults.update(validate_faults(update))
        return dict(self.faults)

    def reset_faults(self) -> dict:
        # A reset returns the instance to a clean state, breaker included, so a
        # test that injected errors cannot leave it failing fast for 5 minutes.
        self.faults = dict(DEFAULT_FAULTS)
        self.breaker = self._new_breaker()
        return dict(self.faults)

    def _new_breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self.tuning.failure_threshold, self.tuning.recovery_timeout, clock=self.clock)

    async def start(self) -> None:
        """Start what runs beside the servers (the AI pool's discovery and
        health checks)."""
        if self.ai_pool is not None:
            await self.ai_pool.start()

    async def stop(self, grace: float) -> bool:
        """Close the AI pool: calls still in flight get up to `grace` seconds."""
        if self.ai_pool is None:
            return True
        return await self.ai_pool.aclose(grace)

    def serves(self, traffic_class: str) -> bool:
        return self.tuning.serves(traffic_class)

    def start_drain(self) -> None:
        self.draining = True
        self.drain_started.set()

    async def admit(self) -> Refusal | None:
        """Gate for the traffic classes: capacity, injected latency, the
        breaker, then the injected error rate (the simulated downstream)."""
        if self.active > self.settings.max_connections:
            return Refusal(503, "instance at max_connections")
        if self.faults["latency_ms"]:
            await asyncio.sleep(self.faults["latency_ms"] / 1000)
        if not self.breaker.allow():
            return Refusal(503, "circuit breaker open")
        if self.rng.random() < self.faults["error_rate"]:
            self.breaker.record_failure()
            return Refusal(self.faults["error_status"], "injected fault")
        self.breaker.record_success()
        return None
