"""The backend's tuning, read from AUTOMATA_* environment variables.

Kubernetes hands these over (the runtime ConfigMap: "Application Tuning";
the Deployment: traffic class and request timeout), the lab sets the AI
pool.  Every value is checked before anything starts; a bad one stops the
process with a message naming the variable.  Unset variables keep the
defaults below, which are the values the platform documents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from .errors import InvalidField
from .load_balancer import BalancerConfig, ConfigError, LoadBalancer, parse_discovery
from .load_balancer.picking import STRATEGY_NAMES

# Traffic classes and the routes each one answers; an instance told its
# class answers 404 on the others' routes, so misrouted traffic is visible
# instead of silently served by the wrong pool.
TRAFFIC_CLASSES = ("api", "websocket", "ai")
# Budget of one call to the AI pool when AUTOMATA_REQUEST_TIMEOUT is unset:
# the edge's timeout for API requests.
DEFAULT_CALL_TIMEOUT = 60.0


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer >= {minimum}, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be an integer >= {minimum}, got {raw!r}")
        return value
    return parse


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be a number of seconds > 0, got {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):  # also refuses nan
        raise ValueError(f"must be a number of seconds > 0, got {raw!r}")
    return value


def _ratio(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be a number between 0 and 1, got {raw!r}") from None
    if not 0 <= value <= 1:
        raise ValueError(f"must be a number between 0 and 1, got {raw!r}")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw
    return parse


def _text(raw: str) -> str:
    return raw.strip()


# variable: (field, parser, what it does); README and docs list the same.
VARIABLES: dict[str, tuple[str, Callable[[str], object], str]] = {
    "AUTOMATA_MAX_CONNECTIONS": ("max_connections", _integer(1),
                                 "connection pools: most connections open (DB pool; each AI endpoint)"),
    "AUTOMATA_POOL_SIZE": ("pool_size", _integer(1),
                           "connection pools: connections kept open between uses"),
    "AUTOMATA_POOL_TIMEOUT": ("pool_timeout", _seconds, "connection pools: longest wait for a free connection"),
    "AUTOMATA_CB_FAILURE_THRESHOLD": ("failure_threshold", _integer(1),
                                      "circuit breakers: consecutive failures that open one"),
    "AUTOMATA_CB_RECOVERY_TIMEOUT": ("recovery_timeout", _seconds,
                                     "circuit breakers: seconds open before a trial call"),
    "AUTOMATA_TRAFFIC_CLASS": ("traffic_class", _choice(*TRAFFIC_CLASSES),
                               "routes this instance answers (unset: all)"),
    "AUTOMATA_REQUEST_TIMEOUT": ("request_timeout", _seconds,
                                 "longest a traffic request may run before 504; also bounds AI calls"),
    "AUTOMATA_AI_POOL": ("ai_pool", _text, "AI endpoints: host:port,... | dns://NAME:PORT | file:///PATH"),
    "AUTOMATA_LB_STRATEGY": ("lb_strategy", _choice(*STRATEGY_NAMES), "how an AI endpoint is picked"),
    "AUTOMATA_LB_TRY_TIMEOUT": ("lb_try_timeout", _seconds, "budget of one try (unset: the whole call's)"),
    "AUTOMATA_LB_RETRY_BUDGET": ("lb_retry_budget", _ratio, "retries as a share of recent calls"),
    "AUTOMATA_LB_HEALTH_INTERVAL": ("lb_health_interval", _seconds, "seconds between active health checks"),
    "AUTOMATA_LB_REFRESH": ("lb_refresh", _seconds, "seconds between DNS lookups / file polls (file: at most 1)"),
}
ENV_OF = {field: name for name, (field, _, _) in VARIABLES.items()}
# BalancerConfig fields that come from a variable above.
_BALANCER_FIELDS = {"strategy": "lb_strategy", "max_connections": "max_connections", "pool_size": "pool_size",
                    "pool_timeout": "pool_timeout", "failure_threshold": "failure_threshold",
                    "recovery_timeout": "recovery_timeout", "try_timeout": "lb_try_timeout",
                    "retry_ratio": "lb_retry_budget", "health_interval": "lb_health_interval",
                    "timeout": "request_timeout"}


@dataclass(frozen=True)
class Tuning:
    max_connections: int = 100
    pool_size: int = 20
    pool_timeout: float = 30.0
    failure_threshold: int = 5
    recovery_timeout: float = 300.0
    traffic_class: str | None = None
    request_timeout: float | None = None
    ai_pool: str | None = None
    lb_strategy: str = "p2c_ewma"
    lb_try_timeout: float | None = None
    lb_retry_budget: float = 0.2
    lb_health_interval: float = 2.0
    lb_refresh: float = 5.0

    def __post_init__(self) -> None:
        if self.pool_size > self.max_connections:
            raise InvalidField(ENV_OF["pool_size"], f"{self.pool_size} is greater than "
                                                    f"{ENV_OF['max_connections']} ({self.max_connections})")
        if self.lb_try_timeout is not None and self.lb_try_timeout > self.call_timeout:
            raise InvalidField(ENV_OF["lb_try_timeout"], f"{self.lb_try_timeout} s is longer than the whole call's "
                                                         f"budget ({ENV_OF['request_timeout']}: {self.call_timeout} s)")
        try:
            self.balancer_config()
            if self.ai_pool is not None:
                parse_discovery(self.ai_pool, self.lb_refresh)
        except ConfigError as exc:
            field = "ai_pool" if exc.field in ("discovery", "refresh") else _BALANCER_FIELDS.get(exc.field, exc.field)
            raise InvalidField(ENV_OF.get(field, field), exc.message) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tuning:
        values = {}
        for name, (field, parse, _) in VARIABLES.items():
            raw = env.get(name)
            if raw is None:
                continue
            if not raw.strip():
                raise InvalidField(name, "is set but empty; unset it to use the default")
            try:
                values[field] = parse(raw.strip())
            except ValueError as exc:
                raise InvalidField(name, str(exc)) from None
        return cls(**values)

    @property
    def call_timeout(self) -> float:
        return self.request_timeout if self.request_timeout is not None else DEFAULT_CALL_TIMEOUT

    def serves(self, traffic_class: str) -> bool:
        return self.traffic_class is None or self.traffic_class == traffic_class

    def balancer_config(self) -> BalancerConfig:
        return BalancerConfig(
            strategy=self.lb_strategy, max_connections=self.max_connections, pool_size=self.pool_size,
            pool_timeout=self.pool_timeout, failure_threshold=self.failure_threshold,
            recovery_timeout=self.recovery_timeout, timeout=self.call_timeout, try_timeout=self.lb_try_timeout,
            retry_ratio=self.lb_retry_budget, health_interval=self.lb_health_interval)

    def ai_balancer(self) -> LoadBalancer | None:
        if self.ai_pool is None:
            return None
        return LoadBalancer("ai", parse_discovery(self.ai_pool, self.lb_refresh), self.balancer_config())

    def describe(self) -> dict:
        """The values in effect, by variable name (logged at start)."""
        return {ENV_OF[f.name]: getattr(self, f.name) for f in fields(self)}
