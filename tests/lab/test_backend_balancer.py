"""Edge -> API -> AI in the lab: a request to /api/ai/... through NGINX or
HAProxy lands on an API backend, which calls the AI pool (the stable
backends) through its client-side balancer (AUTOMATA_AI_POOL, set by
`python -m lab up`).  The answer names both hops."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from labkit import lab_policy, wait_until

# The edges limit /api/ per client (the traffic policy's rate.per_second).
# Each call announces a fresh client address through the trusted gateway;
# should a limit still answer 429 (a shared address), the call asks again
# once a token has refilled, until one passes.
REFILL = 1 / lab_policy().traffic_class("api").rate.per_second
CALLS = 12


def lb_tries(backend: dict) -> float:
    """Tries the backend's AI-pool balancer has sent, summed over endpoints."""
    text = httpx.get(f"{backend['endpoints']['app']}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "automata_lb_endpoint_requests_total" and s.labels.get("pool") == "ai")


def call(client: httpx.Client, headers: dict | None = None) -> httpx.Response:
    answers: list[httpx.Response] = []

    def passed() -> bool:
        answers.append(client.get("/api/ai/lab-probe", params={"seconds": 0}, headers=headers or {}))
        return answers[-1].status_code != 429

    # The poll interval is the limit's refill interval: time is the input.
    wait_until(passed, timeout=10 * REFILL + 5, interval=REFILL, what="a call the rate limit lets through")
    return answers[-1]


def check_two_hops(responses: list[httpx.Response], lab: dict, stable_backends: list[dict]) -> None:
    failed = [r.text for r in responses if r.status_code != 200]
    assert not failed, failed
    bodies = [r.json() for r in responses]
    api_names = {b["name"] for b in lab["backends"]}
    ai_names = {b["name"] for b in stable_backends}
    ai_addresses = {f"{b['address']}:{b['port']}" for b in stable_backends}
    assert {b["instance"] for b in bodies} <= api_names
    assert {b["ai"]["instance"] for b in bodies} <= ai_names
    assert {b["ai_endpoint"] for b in bodies} <= ai_addresses
    assert all(b["ai"]["path"] == "/ai/lab-probe" for b in bodies)
    spread = Counter(b["ai"]["instance"] for b in bodies)
    assert len(spread) >= 2, f"the AI pool was not balanced: {spread}"


@pytest.fixture
def tries_before(lab):
    return {b["name"]: lb_tries(b) for b in lab["backends"]}


@pytest.mark.usefixtures("trusted_gateway")
def test_nginx_edge_api_ai_path_goes_through_the_client_side_balancer(https, ips, lab, stable_backends,
                                                                      tries_before):
    responses = [call(https, {"x-forwarded-for": ips.take()}) for _ in range(CALLS)]
    check_two_hops(responses, lab, stable_backends)
    # The API hops' balancers counted these tries (the library, not a plain client).
    sent = sum(lb_tries(b) for b in lab["backends"]) - sum(tries_before.values())
    assert sent >= CALLS


def test_haproxy_edge_api_ai_path_goes_through_the_client_side_balancer(edge, ips, lab, stable_backends,
                                                                        tries_before):
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=15) as client:
        responses = [call(client, {"x-forwarded-for": ips.take()}) for _ in range(CALLS)]
    check_two_hops(responses, lab, stable_backends)
    sent = sum(lb_tries(b) for b in lab["backends"]) - sum(tries_before.values())
    assert sent >= CALLS


def ai_pool_of(backend: dict, timeout: float = 45.0) -> dict:
    """The ai_pool component of /health/detailed; polls, because another
    test may have a backend stopped for a moment."""
    detailed: list[dict] = []

    def answered() -> bool:
        try:
            detailed.append(httpx.get(f"{backend['endpoints']['app']}/health/detailed", timeout=5).json())
        except httpx.TransportError:
            return False
        return True

    wait_until(answered, timeout, interval=0.5, what=f"{backend['name']} answering /health/detailed")
    return detailed[-1]["components"]["ai_pool"]


def test_every_lab_backend_reports_its_ai_pool(lab, stable_backends):
    expected = {f"{b['address']}:{b['port']}" for b in stable_backends}
    for backend in lab["backends"]:
        pool = ai_pool_of(backend)
        assert {e["endpoint"] for e in pool["endpoints"]} == expected, backend["name"]
        assert pool["status"] == "ok", (backend["name"], pool)
