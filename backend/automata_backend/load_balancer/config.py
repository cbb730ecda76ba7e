"""Settings of one balancer, checked once when built."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError
from .picking import STRATEGY_NAMES


def _positive(field: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ConfigError(field, f"must be a number > 0, got {value!r}")


def _at_least(field: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class BalancerConfig:
    strategy: str = "p2c_ewma"
    # Per endpoint HTTP connection pool ("Application Tuning"): at most
    # max_connections open, pool_size kept alive between calls, and a call
    # waits up to pool_timeout for a free connection before the try fails
    # (and may go to another endpoint, since nothing was sent).
    max_connections: int = 100
    pool_size: int = 20
    pool_timeout: float = 30.0
    # Per endpoint circuit breaker.
    failure_threshold: int = 5
    recovery_timeout: float = 300.0
    # A call's whole budget, retries included, and the budget of one try.
    # None: a try may use the whole budget, so a slow answer is never cut
    # and replayed; only failures are retried.
    timeout: float = 60.0
    try_timeout: float | None = None
    max_attempts: int = 3
    # Retry budget: retries <= retry_ratio x calls (+ retry_min_per_second)
    # over the last retry_window seconds.
    retry_ratio: float = 0.2
    retry_min_per_second: float = 1.0
    retry_window: float = 10.0
    # Active health checks; health_interval None disables them (ejection is
    # then passive only, by the breakers).
    health_path: str = "/healthz"
    health_interval: float | None = 2.0
    health_timeout: float = 1.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1
    # Peak-EWMA decay time: how long a latency spike is remembered.
    ewma_decay: float = 10.0
    # Points per endpoint on the consistent-hash ring.
    hash_replicas: int = 100

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise ConfigError("strategy", f"unknown strategy {self.strategy!r}; known: {', '.join(STRATEGY_NAMES)}")
        _at_least("max_connections", self.max_connections, 1)
        _at_least("pool_size", self.pool_size, 1)
        if self.pool_size > self.max_connections:
            raise ConfigError("pool_size", f"{self.pool_size} is greater than max_connections ({self.max_connections})")
        _at_least("failure_threshold", self.failure_threshold, 1)
        _at_least("max_attempts", self.max_attempts, 1)
        _at_least("unhealthy_threshold", self.unhealthy_threshold, 1)
        _at_least("healthy_threshold", self.healthy_threshold, 1)
        _at_least("hash_replicas", self.hash_replicas, 1)
        for field in ("pool_timeout", "recovery_timeout", "timeout", "retry_window", "health_timeout", "ewma_decay"):
            _positive(field, getattr(self, field))
        for field in ("try_timeout", "health_interval"):
            if getattr(self, field) is not None:
                _positive(field, getattr(self, field))
        if self.try_timeout is not None and self.try_timeout > self.timeout:
            raise ConfigError("try_timeout",
                              f"{self.try_timeout} s is longer than the whole call's timeout ({self.timeout} s)")
        for field in ("retry_ratio", "retry_min_per_second"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
                raise ConfigError(field, f"must be a number >= 0, got {value!r}")
        if not self.health_path.startswith("/"):
            raise ConfigError("health_path", f"must start with /, got {self.health_path!r}")

    @property
    def per_try(self) -> float:
        return self.try_timeout if self.try_timeout is not None else self.timeout
