"""NGINX pools, seen from the X-Backend-Instance header of real responses.

Each test acts as its own clients (fresh X-Forwarded-For addresses from a
trusted peer, see nginx_lab.py), so rate limits never interfere.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from labkit import node, tls_context, wait_for_requests_in_flight, ws_connect, ws_url
from nginx_lab import DEFAULTS, access_log, instance, spread

from automata_lb import edge as edge_ops
from automata_lb import targets

pytestmark = pytest.mark.usefixtures("trusted_gateway")


@pytest.fixture(scope="module")
def stable_names(stable_backends) -> set[str]:
    return {b["name"] for b in stable_backends}


def test_round_robin_spreads_requests_evenly(https, ips, stable_names):
    client = {"x-forwarded-for": ips.take()}
    responses = [https.get("/api/rr", headers=client) for _ in range(12)]
    assert {r.status_code for r in responses} == {200}
    # The policy's canary share takes some /api/ requests to the canary pool;
    # the stable pool's rotation goes on regardless.
    counts = spread(r for r in responses if instance(r) in stable_names)
    assert set(counts) == stable_names
    # Shared-memory round robin: every worker continues the same rotation.
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_a_share_moved_without_a_converge_meets_the_very_next_request(edge, ca_cert, ips, lab):
    """A change made between converges returns once NGINX's old workers stopped
    accepting connections (a reload only signals them): the next request, on
    a new connection, already meets the new configuration.  At 100 % and
    0 % the canary share leaves no room for chance."""
    target = targets.lab()
    before = next(n["nginx"]["canary_share"] for n in edge_ops.probe_all(target) if n["node"] == edge["name"])
    canary = {b["name"] for b in lab["backends"] if b["version"] == "canary"}
    try:
        for share in (100, 0, 100, 0):
            edge_ops.set_canary_share(target, share)
            with httpx.Client(base_url=edge["endpoints"]["nginx_https"], verify=tls_context(ca_cert), timeout=10) as c:
                answered = instance(c.get("/api/next", headers={"x-forwarded-for": ips.take()}))
            assert (answered in canary) == (share == 100), (share, answered)
    finally:
        edge_ops.set_canary_share(target, before)


def test_auth_goes_to_the_least_busy_instance(https, ips, stable_names, lab):
    # /auth/ was pinned per client /24 (ip_hash) before the traffic policy;
    # the policy makes it least connections on every tier (logins are
    # CPU-heavy and uneven), as HAProxy and the mesh already did.  Stickiness
    # is the WebSocket class's, tested below.
    client = {"x-forwarded-for": ips.take()}
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(https.get, "/auth/slow", params={"delay": 3}, headers=client)
        wait_for_requests_in_flight(lab["backends"], 1)  # the slow request
        fast = [https.get("/auth/fast", headers={"x-forwarded-for": ips.take()}) for _ in range(4)]
        busy = instance(slow.result())
    # (A request the canary dice sends to the canary pool is balanced there.)
    stable_fast = {instance(r) for r in fast if instance(r) in stable_names}
    assert stable_fast and busy not in stable_fast, (busy, spread(fast))


def test_least_conn_avoids_busy_instances(https, ips, stable_names, lab):
    client = {"x-forwarded-for": ips.take()}
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(https.get, "/api/compute/slow", params={"delay": 3}, headers=client) for _ in range(2)]
        wait_for_requests_in_flight(lab["backends"], 2)  # both slow requests
        fast = [https.get("/api/compute/fast", headers=client) for _ in range(6)]
        busy = {instance(f.result()) for f in slow}
    assert len(busy) == 2, "least_conn put both slow requests on one instance"
    # (A request the canary dice sends to the canary pool is balanced there.)
    idle = stable_names - busy
    stable_fast = [r for r in fast if instance(r) in stable_names]
    assert stable_fast and {instance(r) for r in stable_fast} <= idle, (busy, spread(fast))


def test_websocket_upgrades_through_tls_and_sticks_to_one_instance(edge, ca_cert, ips):
    url, ctx = ws_url(edge["endpoints"]["nginx_https"]), tls_context(ca_cert)

    async def session(client: str) -> str:
        async with ws_connect(url, ssl=ctx, additional_headers={"x-forwarded-for": client}, open_timeout=10) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello["type"] == "hello"
            assert ws.response.headers["x-backend-instance"] == hello["instance"]
            for i in range(3):
                await ws.send(f"m{i}")
                echo = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert echo == {"type": "echo", "instance": hello["instance"], "data": f"m{i}"}
            return hello["instance"]

    async def clients() -> dict[str, str]:
        sessions = {}
        for _ in range(6):
            client = ips.take()
            per_client = {await session(client) for _ in range(3)}  # reconnects of one client
            assert len(per_client) == 1, f"client {client} reconnected to {per_client}"
            sessions[client] = per_client.pop()
        return sessions

    sessions = asyncio.run(clients())
    assert len(set(sessions.values())) >= 2, sessions


def test_real_ip_comes_from_trusted_proxies_only(https, edge, lab):
    # From the test machine (the trusted gateway): the forwarded client counts.
    echo = https.get("/api/ip", headers={"x-forwarded-for": "203.0.113.50"}).json()
    assert echo["headers"]["x-real-ip"] == "203.0.113.50"
    assert echo["headers"]["x-forwarded-for"] == f"203.0.113.50, {lab['network']['gateway']}"
    # From edge-2, an untrusted peer: the spoofed chain is dropped entirely.
    edge2 = lab["edges"][1]
    out = node(edge2["name"]).check_output(
        f"curl -sk --max-time 10 -H 'X-Forwarded-For: 203.0.113.50' https://{edge['address']}/api/ip")
    headers = json.loads(out)["headers"]
    assert headers["x-real-ip"] == edge2["address"]
    assert headers["x-forwarded-for"] == edge2["address"]
    assert headers["x-forwarded-proto"] == "https"


def test_request_id_is_kept_or_generated_and_logged(https, ips, edge, lab):
    mine = f"nginx-test-{uuid.uuid4().hex}"
    r = https.get("/api/rid", headers={"x-request-id": mine, "x-forwarded-for": ips.take()})
    assert r.json()["headers"]["x-request-id"] == mine
    assert r.headers["x-request-id"] == mine
    generated = https.get("/api/rid", headers={"x-forwarded-for": ips.take()})
    assert len(generated.json()["headers"]["x-request-id"]) == 32
    # The structured access log carries the upstream that answered and its timing.
    [entry] = access_log(node(edge["name"]), mine, expect={mine})
    # Any backend: the canary share of /api/ may pick the canary.
    addresses = {f"{b['address']}:{b['port']}": b["name"] for b in lab["backends"]}
    assert addresses[entry["upstream_addr"]] == instance(r)
    assert entry["upstream_status"] == "200" and entry["status"] == 200
    assert float(entry["upstream_response_time"]) >= 0 and entry["request_time"] >= 0
    assert entry["protocol"] == "HTTP/1.1" and entry["tls"] in ("TLSv1.2", "TLSv1.3")


def test_unrouted_paths_get_404_from_nginx(https):
    r = https.get("/metrics")  # the backends' metrics stay internal
    assert r.status_code == 404
    assert "x-backend-instance" not in r.headers


def test_stub_status_answers_on_the_node_only(edge, lab):
    port = DEFAULTS["nginx_lb_status_port"]
    edge1 = node(edge["name"])
    assert "Active connections" in edge1.check_output(f"curl -s --max-time 5 http://127.0.0.1:{port}/stub_status")
    probe = node(lab["edges"][1]["name"]).run(f"curl -s --max-time 5 http://{edge['address']}:{port}/stub_status")
    assert probe.rc != 0  # nothing listens on the node's network address
