"""One traffic class behaves the same on NGINX and HAProxy (edge-1).

Both load balancers render the same policy (traffic/policy.yml plus the lab's
overrides); these tests send the same traffic to both and compare what
clients see.  Each request or test is its own client through the trusted lab
gateway (X-Forwarded-For), so per-client limits of one test never leak into
another.
"""

from __future__ import annotations

import itertools
import math
import random
import time

import httpx
import pytest

from lab.podman import podman

from haproxy_lab import server_states, wait_until_settled
from labkit import LoadGenerator, lab_policy, node, tls_context, wait_until
from nginx_lab import ws_hello

POLICY = lab_policy()
LBS = ["nginx", "haproxy"]
_addresses = itertools.count(random.randrange(0, 5000))


def client_ip() -> str:
    """A fresh client address from 198.18.0.0/15 (RFC 2544), never reused soon."""
    n = next(_addresses) % 60000
    return f"198.{18 + n // 30000}.{(n // 250) % 120 + 120}.{n % 250 + 1}"


def base_url(edge: dict, lb: str) -> str:
    return edge["endpoints"]["nginx_https" if lb == "nginx" else "haproxy_http"]


@pytest.fixture
def http(edge, ca_cert):
    clients = {lb: httpx.Client(base_url=base_url(edge, lb), verify=tls_context(ca_cert), timeout=30) for lb in LBS}
    yield clients
    for c in clients.values():
        c.close()


# --- rate + burst -------------------------------------------------------------------

@pytest.mark.parametrize("cls", ["api", "auth"])
def test_rate_and_burst_mean_the_same_on_both(http, cls):
    """burst + 1 requests at once pass, then only what refilled: on both, the
    same count within one request per refill interval that elapsed."""
    rate = POLICY.traffic_class(cls).rate
    path = POLICY.traffic_class(cls).paths[0] + "burst"
    passed = {}
    for lb in LBS:
        who = {"x-forwarded-for": client_ip()}
        started = time.monotonic()
        codes = [http[lb].get(path, headers=who).status_code for _ in range(rate.burst + 15)]
        elapsed = time.monotonic() - started
        assert 429 not in codes[:rate.burst + 1], (lb, codes)
        assert 429 in codes, (lb, codes)
        passed[lb] = (len(codes) - codes.count(429), int(rate.per_second * elapsed) + 1)
    for lb, (count, refill) in passed.items():
        assert rate.burst + 1 <= count <= rate.burst + 1 + refill, (lb, passed)
    print(f"{cls}: rate {rate.per_second}/s burst {rate.burst}: passed {passed}")


def test_a_client_refused_on_one_class_is_served_on_another_on_both(http):
    for lb in LBS:
        who = {"x-forwarded-for": client_ip()}
        burst = POLICY.traffic_class("auth").rate.burst
        codes = [http[lb].get("/auth/x", headers=who).status_code for _ in range(burst + 10)]
        assert 429 in codes, lb
        assert http[lb].get("/api/x", headers=who).status_code == 200, lb


# --- stickiness ---------------------------------------------------------------------

def _ws_instance(edge: dict, lb: str, ca_cert: str, ip: str) -> str:
    url = base_url(edge, lb).replace("https://", "wss://").replace("http://", "ws://") + "/ws"
    return ws_hello(url, ca_cert, {"x-forwarded-for": ip})["instance"]


@pytest.mark.parametrize("lb", LBS)
def test_sticky_class_pins_each_client_on_both(edge, ca_cert, lb):
    assert POLICY.traffic_class("websocket").balance == "sticky_client"
    pinned = {}
    for _ in range(6):
        ip = client_ip()
        seen = {_ws_instance(edge, lb, ca_cert, ip) for _ in range(3)}
        assert len(seen) == 1, f"{lb}: client {ip} reconnected to {seen}"
        pinned[ip] = seen.pop()
    assert len(set(pinned.values())) >= 2, (lb, pinned)  # pinning, not a pool of one


# --- timeouts -----------------------------------------------------------------------

def test_ai_calls_outlive_the_api_response_timeout_class_by_class(http):
    # The ai class's response timeout (300 s) is its own on both: a 3 s call
    # streams through, while the api class (60 s) is not touched by it.
    ai = POLICY.traffic_class("ai")
    assert ai.timeouts.response_ms > POLICY.traffic_class("api").timeouts.response_ms
    for lb in LBS:
        r = http[lb].get("/ai/slow", params={"seconds": 3}, headers={"x-forwarded-for": client_ip()})
        assert r.status_code == 200 and r.json()["seconds"] == 3, (lb, r.status_code)


# --- retries ------------------------------------------------------------------------

@pytest.fixture
def settled_lbs():
    host = node("edge-1")
    wait_until_settled(host, [c.name for c in POLICY.classes])
    return host


def test_failed_idempotent_requests_are_retried_and_posts_are_not(http, fault, settled_lbs, lab):
    # backend-2 answers 503 to every request.  A POST it failed reaches the
    # client (it may have run); a GET is tried on another server.  Both LBs.
    assert POLICY.traffic_class("api").retries.idempotent_only
    for lb in LBS:
        fault("backend-2", error_rate=1.0, error_status=503)
        try:
            posts = [http[lb].post("/api/retry", headers={"x-forwarded-for": client_ip()}) for _ in range(12)]
            gets = [http[lb].get("/api/retry", headers={"x-forwarded-for": client_ip()}) for _ in range(30)]
        finally:
            httpx.delete(next(b for b in lab["backends"] if b["name"] == "backend-2")["endpoints"]["admin"] + "/fault",
                         timeout=5)
        assert 503 in [r.status_code for r in posts], (lb, [r.status_code for r in posts])
        assert [r.status_code for r in gets] == [200] * len(gets), lb
        assert "backend-2" not in {r.headers.get("x-backend-instance") for r in gets}, lb
        # HAProxy's circuit breaker took backend-2 out; let it come back.
        wait_until(lambda: all(s.status == "UP" for s in server_states(settled_lbs, "api").values()), timeout=30)


def test_a_backend_killed_under_load_costs_no_request_on_either(edge, lab, ca_cert, settled_lbs, http):
    victim = next(b for b in lab["backends"] if b["name"] == "backend-3")
    # Steady idempotent requests to each LB, each its own client from this
    # module's addresses; a connection closed unanswered is a failure here.
    loads = {lb: LoadGenerator(base_url(edge, lb), ca_cert, client_ip, websockets=0, path="/api/steady",
                               max_seconds=90, timeout=30, interval=0.03, resend_after_close=False) for lb in LBS}
    try:
        with loads["nginx"], loads["haproxy"]:
            # Both streams reach the victim before it dies.
            for load in loads.values():
                wait_until(lambda load=load: any(o.instance == victim["name"] for o in load.report.outcomes), timeout=30)
            podman("kill", "--signal", "KILL", victim["container"])
            killed = time.time()
            # Until HAProxy's checks have taken it out, and a while after:
            # every LB has answered requests since then, none from the victim.
            wait_until(lambda: server_states(settled_lbs, "api")["backend-3"].status.startswith("DOWN"), timeout=30)
            down = time.time()
            for load in loads.values():
                load.wait_for_answers(100, since=down)
    finally:
        podman("start", victim["container"])  # never leave the lab short of a backend
    for lb, load in loads.items():
        report = load.report
        print(f"{lb}: {report.requests} requests, {len(report.failures)} failed")
        assert report.requests > 50, lb
        assert report.failures == [], (lb, report.failures[:5])
        assert all(o.instance != victim["name"] for o in report.between(down, math.inf)), lb
        assert report.between(killed, down), (lb, "no request while HAProxy's checks took the victim out")
    # Back on both: HAProxy's checks see it UP, NGINX sends it requests again.
    wait_until(lambda: server_states(settled_lbs, "api")["backend-3"].status == "UP", timeout=60, interval=1)
    wait_until(lambda: http["nginx"].get("/health").headers.get("x-backend-instance") == "backend-3",
               timeout=60, interval=0.3)


# --- one change, both load balancers, hitless ---------------------------------------
