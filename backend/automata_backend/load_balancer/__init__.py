"""Client-side load balancing for calls from one backend service to
another (the API calling the AI pool): discovery, picking, health checks,
per-endpoint circuit breakers, retries under a budget, graceful shutdown.

    discovery.py  where endpoints come from: static list, DNS, watched file
    picking.py    round robin, least outstanding, P2C over peak EWMA, hash ring
    breaker.py    per-endpoint circuit breaker (passive ejection)
    retry.py      what may be retried and the retry budget
    balancer.py   LoadBalancer: ties it together, active health checks
    metrics.py    automata_lb_* per-endpoint metrics

Logs go to the `load_balancer` logger.  docs/client-load-balancing.md
explains the strategies and when to choose each.
"""

from .balancer import LoadBalancer
from .breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from .config import BalancerConfig
from .discovery import DnsDiscovery, FileDiscovery, StaticDiscovery, parse_discovery
from .endpoint import Address, Endpoint
from .errors import (BalancerClosed, ConfigError, DeadlineExceeded, DiscoveryError, LoadBalancerError,
                     NoEndpointAvailable, UpstreamFailed)
from .picking import STRATEGY_NAMES
from .retry import RetryBudget

__all__ = [
    "CLOSED", "HALF_OPEN", "OPEN", "STRATEGY_NAMES", "Address", "BalancerClosed", "BalancerConfig", "Breaker",
    "ConfigError", "DeadlineExceeded", "DiscoveryError", "DnsDiscovery", "Endpoint", "FileDiscovery",
    "LoadBalancer", "LoadBalancerError", "NoEndpointAvailable", "RetryBudget", "StaticDiscovery",
    "UpstreamFailed", "parse_discovery",
]
