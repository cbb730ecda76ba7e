"""Per-endpoint metrics of one balancer (label `pool` names the balancer,
`endpoint` is host:port).  Endpoint series are dropped when the endpoint
leaves, so a pool that churns through pod addresses does not grow without
bound."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .breaker import CLOSED, STATES
from .endpoint import Endpoint

OUTCOMES = ("success", "error", "failure")  # 2xx-4xx / 5xx answer / no answer
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class BalancerMetrics:
    def __init__(self, pool: str, registry: CollectorRegistry) -> None:
        self.pool = pool
        self.registry = registry
        ep = ["pool", "endpoint"]
        self.requests = Counter("automata_lb_endpoint_requests", "Tries sent to an endpoint, by outcome "
                                "(success: 1xx-4xx answer, error: 5xx answer, failure: no answer)",
                                [*ep, "outcome"], registry=registry)
        self.duration = Histogram("automata_lb_endpoint_request_duration_seconds", "Time per try, by endpoint",
                                  ep, buckets=LATENCY_BUCKETS, registry=registry)
        self.inflight = Gauge("automata_lb_endpoint_inflight", "Tries in flight to an endpoint", ep, registry=registry)
        self.ewma = Gauge("automata_lb_endpoint_latency_ewma_seconds", "Peak-EWMA latency estimate", ep,
                          registry=registry)
        self.healthy = Gauge("automata_lb_endpoint_healthy", "1 while active health checks pass", ep,
                             registry=registry)
        self.breaker_open = Gauge("automata_lb_circuit_breaker_open",
                                  "1 while the endpoint's circuit breaker is not closed (open or half-open)",
                                  ep, registry=registry)
        self.breaker_state = Gauge("automata_lb_circuit_breaker_state", "1 for the breaker's current state",
                                   [*ep, "state"], registry=registry)
        self.retries = Counter("automata_lb_retries", "Retries sent, by the reason of the failed try",
                               ["pool", "reason"], registry=registry)
        self.budget_exhausted = Counter("automata_lb_retry_budget_exhausted",
                                        "Retries refused because the retry budget was spent", ["pool"],
                                        registry=registry)
        self.calls = Counter("automata_lb_calls", "Calls by final result", ["pool", "result"], registry=registry)
        self._endpoint_gauges = Gauge("automata_lb_endpoints", "Known endpoints by state", ["pool", "state"],
                                      registry=registry)

    def count_endpoints(self, state: str, read: Callable[[], float]) -> None:
        self._endpoint_gauges.labels(self.pool, state).set_function(read)

    def bind(self, e: Endpoint) -> None:
        labels = (self.pool, e.name)
        e.children = {
            **{outcome: self.requests.labels(*labels, outcome) for outcome in OUTCOMES},
            "duration": self.duration.labels(*labels),
        }
        self.inflight.labels(*labels).set_function(lambda: e.inflight)
        self.ewma.labels(*labels).set_function(lambda: e.ewma)
        self.healthy.labels(*labels).set_function(lambda: e.healthy)
        self.breaker_open.labels(*labels).set_function(lambda: e.breaker.state != CLOSED)
        for state in STATES:
            self.breaker_state.labels(*labels, state).set_function(lambda s=state: e.breaker.state == s)

    def unbind(self, e: Endpoint) -> None:
        labels = (self.pool, e.name)
        for metric in (self.duration, self.inflight, self.ewma, self.healthy, self.breaker_open):
            metric.remove(*labels)
        for outcome in OUTCOMES:
            self.requests.remove(*labels, outcome)
        for state in STATES:
            self.breaker_state.remove(*labels, state)
