"""Prometheus metrics and the /metrics/performance summary of one instance.

Each instance owns its CollectorRegistry (never the global default one), so
several apps can live in one test process without clashing.
"""

from __future__ import annotations

import math
from collections import Counter as Tally
from collections import defaultdict, deque
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

if TYPE_CHECKING:
    from .state import Backend

# Up to 10 minutes: /ai responses are allowed to take that long.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Percentiles come from the most recent samples per route, which bounds memory
# and makes the numbers follow the current load rather than the whole uptime.
WINDOW = 1024
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    return sorted_values[max(math.ceil(p / 100 * len(sorted_values)) - 1, 0)]


class _Include:
    """Serve another registry's metrics (the AI pool's automata_lb_*) as
    part of this one, so /metrics stays one scrape per instance."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self):
        return self._registry.collect()


class Metrics:
    def __init__(self, backend: Backend) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "automata_http_requests", "HTTP requests and WebSocket handshakes answered",
            ["route", "method", "status"], registry=registry)
        self.duration = Histogram(
            "automata_http_request_duration_seconds", "HTTP request duration by route class",
            ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.websocket_messages = Counter(
            "automata_websocket_messages", "WebSocket messages received from clients", registry=registry)

        # Live values are read when scraped, so they can never drift from the state.
        gauges = {
            "automata_active_connections": ("HTTP requests in flight plus open WebSockets",
                                            lambda: backend.active),
            "automata_max_connections": ("Concurrent connections accepted before answering 503",
                                         lambda: backend.settings.max_connections),
            # Kept unlabelled for the dashboards: 1 while the simulated
            # downstream's breaker is open or any AI endpoint's breaker is not
            # closed (open, or half-open awaiting its trial); the per-endpoint
            # view is automata_lb_circuit_breaker_open{pool,endpoint}.
            "automata_circuit_breaker_open": ("1 while the downstream circuit breaker is open or any AI pool "
                                              "endpoint's breaker is open or half-open",
                                              lambda: backend.breaker.state == "open" or (
                                                  backend.ai_pool is not None and backend.ai_pool.any_breaker_open())),
            "automata_websocket_connections": ("Open WebSocket connections",
                                               lambda: backend.websockets_open),
            "automata_db_connections_active": ("Simulated DB pool connections checked out",
                                               lambda: backend.pool.active),
            "automata_db_connections_idle": ("Simulated DB pool connections open and idle",
                                             lambda: backend.pool.idle),
        }
        for name, (doc, read) in gauges.items():
            Gauge(name, doc, registry=registry).set_function(read)
        # CPU, memory and descriptors of this process (process_*), for the
        # dashboard's resource panels where no cAdvisor runs (the lab, VMs).
        ProcessCollector(registry=registry)
        if backend.ai_pool is not None:
            registry.register(_Include(backend.ai_pool.registry))

        self._backend = backend
        self._samples: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=WINDOW))
        self._statuses: dict[str, Tally[int]] = defaultdict(Tally)

    def observe(self, route: str, method: str, status: int, seconds: float | None) -> None:
        """Record one answered request; `seconds` is None for WebSocket sessions,
        whose lifetime is not a latency."""
        method = method if method in KNOWN_METHODS else "OTHER"  # bounded label values
        self.requests.labels(route, method, str(status)).inc()
        self._statuses[route][status] += 1
        if seconds is not None:
            self.duration.labels(route).observe(seconds)
            self._samples[route].append(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def performance(self) -> dict:
        routes = {}
        for route, statuses in sorted(self._statuses.items()):
            summary: dict = {"requests": sum(statuses.values()),
                             "by_status": {str(s): n for s, n in sorted(statuses.items())}}
            samples = sorted(self._samples.get(route, ()))
            if samples:
                summary["latency_seconds"] = {f"p{p}": round(_percentile(samples, p), 6) for p in (50, 95, 99)}
                summary["latency_window"] = len(samples)
            routes[route] = summary
        backend = self._backend
        return {
            "instance": backend.settings.instance,
            "version": backend.settings.version,
            "uptime_seconds": round(backend.uptime, 3),
            "requests_total": sum(r["requests"] for r in routes.values()),
            "active_connections": backend.active,
            "websocket_connections": backend.websockets_open,
            "routes": routes,
        }
