"""HAProxy routing on the lab: each backend's algorithm, seen from the
X-Backend-Instance header, plus canary share and A/B routing.

Every request comes from the test machine, which HAProxy sees as the lab
network's gateway (one client address): paths without a rate limit
(`/health` goes to the default `api` backend) carry the bulk traffic.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from haproxy_lab import WebSocketSession, instances, retries, server_states, wait_until_settled
from labkit import lab_policy, node, wait_until

POLICY = lab_policy()
BACKENDS = [c.name for c in POLICY.classes] + [c.name + "_canary" for c in POLICY.classes if c.canary]
CANARY_PERCENT = POLICY.canary.share
# 3000 draws at p=0.10: sd = 0.55 points, so +-3 points is more than 5 sd.
CANARY_REQUESTS = 3000
CANARY_TOLERANCE = 3.0
# The health path goes to the api class's stable pool without its limit or
# canary share (as on NGINX); the canary share is measured on /api/, each
# request its own client (the lab gateway is a trusted proxy) so no rate limit
# interferes.


@pytest.fixture(scope="module")
def settled(lab):
    """Earlier tests may have marked servers down; slowstart ramps them back."""
    wait_until_settled(node("edge-1"), BACKENDS)


@pytest.fixture
def client(edge, settled):
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=10) as c:
        yield c


def test_round_robin_cycles_over_the_stable_instances(client, stable_backends):
    names = sorted(b["name"] for b in stable_backends)
    edge1 = node("edge-1")
    # Whenever a server's weight changes (the last step of a slowstart, after
    # an earlier test took servers out), HAProxy places it again in its
    # rotation, and the first round after that can give one server a second
    # turn: 6 times in 60 on the lab when traffic ran during the ramp, and
    # never in 60 more once that first round was sent.
    # The rotation is judged from the second round on.
    instances(client, "/health", len(names))
    retried_before = retries(edge1, "api")
    seen = [i for i in instances(client, "/health", 60) if i in names]  # the canary share aside
    retried = retries(edge1, "api") - retried_before
    assert len(seen) >= 40
    # Strict rotation: any window of len(names) consecutive answers holds each
    # instance exactly once.  A request HAProxy sent again (an idle server
    # connection that closed as it was reused) took a second server's turn,
    # which shows in at most len(names) windows.
    out_of_turn = [start for start in range(len(seen) - len(names) + 1)
                   if sorted(seen[start:start + len(names)]) != names]
    assert len(out_of_turn) <= retried * len(names), (seen, out_of_turn, retried)


def test_least_connections_avoids_the_busy_instance(client):
    # A slow auth request keeps one instance busy; while it runs, leastconn
    # sends every new auth request to the two idle ones (round robin would
    # send every third to the busy one).
    busy: dict[str, str] = {}

    def slow() -> None:
        busy["instance"] = client.get("/auth/slow", params={"delay": 3}).headers["x-backend-instance"]

    worker = threading.Thread(target=slow)
    worker.start()
    try:
        # The slow request is on its server (HAProxy's own session count), in
        # the stable pool or, when the canary dice picked it, the canary pool.
        wait_until(lambda: sum(s.sessions for pool in ("auth", "auth_canary")
                               for s in server_states(node("edge-1"), pool).values()) >= 1,
                   timeout=3, interval=0.05, what="the slow auth request on a server")
        quick = instances(client, "/auth/quick", 4)
    finally:
        worker.join(timeout=10)
    # (A request the canary dice sends to the canary backend is balanced there.)
    stable = [i for i in quick if not i.startswith("canary")]
    assert stable and busy["instance"] not in stable, (busy, quick)


def test_websockets_of_one_client_stay_on_one_instance(edge, settled):
    url = edge["endpoints"]["haproxy_http"].replace("http://", "ws://") + "/ws"
    sessions = [WebSocketSession(url) for _ in range(6)]
    try:
        assert len({s.instance for s in sessions}) == 1, [s.instance for s in sessions]
        for n, session in enumerate(sessions):
            assert session.echo(f"message-{n}") == sessions[0].instance
    finally:
        for session in sessions:
            session.close()


def test_canary_receives_its_share(edge, settled):
    def batch(start: int) -> Counter:
        with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=10) as c:
            return Counter(c.get("/api/share", headers={"x-forwarded-for": f"198.18.{(start + i) // 250}.{(start + i) % 250}"})
                           .headers["x-backend-version"] for i in range(CANARY_REQUESTS // 4))

    with ThreadPoolExecutor(4) as pool:
        counts = sum(pool.map(batch, [n * CANARY_REQUESTS // 4 for n in range(4)]), Counter())
    share = 100 * counts["canary"] / sum(counts.values())
    assert abs(share - CANARY_PERCENT) <= CANARY_TOLERANCE, counts


@pytest.mark.parametrize("how", ["header", "cookie"])
def test_ab_header_or_cookie_always_reaches_the_variant(client, lab, how):
    variant = {b["name"] for b in lab["backends"] if b["version"] == "canary"}
    c = POLICY.canary
    headers = {c.ab_header: c.ab_value} if how == "header" else {"Cookie": f"{c.ab_cookie}={c.ab_value}"}
    who = iter(f"198.18.9.{n}" for n in range(200))
    assert {client.get("/api/ab", headers=headers | {"x-forwarded-for": next(who)}).headers["x-backend-instance"]
            for _ in range(30)} <= variant
    # Any other value is ordinary traffic.
    other = {c.ab_header: "other"} if how == "header" else {"Cookie": f"{c.ab_cookie}=other"}
    assert {client.get("/api/ab", headers=other | {"x-forwarded-for": next(who)}).headers["x-backend-instance"]
            for _ in range(30)} - variant


def test_edge_health_endpoint_answers_itself(client):
    response = client.get("/lb-health")
    assert response.status_code == 200
    assert "x-backend-instance" not in response.headers  # HAProxy answered, no backend
