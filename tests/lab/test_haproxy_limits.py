"""Per-client rate limits (per path class, from rate_limits.map) and the
connection flood protection, on edge-1.

All test traffic reaches HAProxy from one address (the lab gateway), which
is exactly one "client" for the stick tables.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from haproxy_lab import node, runtime, wait_for
from labkit import ROOT

DEFAULTS = yaml.safe_load((ROOT / "roles/haproxy_lb/defaults/main.yml").read_text())
LIMITS = {limit["class"]: limit for limit in DEFAULTS["haproxy_lb_rate_limits"]}
MAX_CONNECTION_RATE = DEFAULTS["haproxy_lb_client_max_connection_rate"]


def _fresh_window() -> None:
    # http_req_rate(1s): after two quiet seconds every class starts at zero.
    time.sleep(2)


@pytest.mark.parametrize("cls, path", [("api", "/api/limited"), ("auth", "/auth/limited"),
                                       ("websocket", "/ws")])
def test_request_after_the_rate_gets_429(edge, cls, path):
    rate = LIMITS[cls]["rate"]
    assert path.startswith(LIMITS[cls]["path_prefix"])
    _fresh_window()
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as client:
        start = time.monotonic()
        codes = [client.get(path).status_code for _ in range(rate + 1)]
        elapsed = time.monotonic() - start
        assert elapsed < 1.0, f"too slow to test a per-second rate ({elapsed:.2f}s)"
        assert 429 not in codes[:rate], codes
        assert codes[rate] == 429, codes
        # Another class has its own counter: not limited by this one.
        other = "/auth/other" if cls != "auth" else "/api/other"
        assert client.get(other).status_code != 429
        # The window slides on: the class is served again.
        time.sleep(1.5)
        assert client.get(path).status_code != 429


def test_unlisted_paths_are_not_rate_limited(edge):
    _fresh_window()
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as client:
        codes = {client.get("/health").status_code for _ in range(3 * max(l["rate"] for l in LIMITS.values()))}
    assert codes == {200}


def test_connection_flood_is_cut_off_and_recovers(edge):
    # More new connections per period than allowed: HAProxy closes the
    # excess before reading a byte.  Every socket is closed at once, so the
    # flood holds no resources; the period then lets the client back in.
    url = urlsplit(edge["endpoints"]["haproxy_http"])
    refused = 0
    for _ in range(MAX_CONNECTION_RATE + 20):
        try:
            with socket.create_connection((url.hostname, url.port), timeout=2) as sock:
                sock.sendall(b"GET /lb-health HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
                answer = sock.recv(64)
        except ConnectionError:  # reset by HAProxy at connect, or before or while we sent
            answer = b""
        refused += answer == b""
    assert refused >= 15, refused

    def served() -> bool:
        try:
            return httpx.get(f"{edge['endpoints']['haproxy_http']}/lb-health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False
    took = wait_for(served, timeout=20, interval=1)
    print(f"flood over: served again after {took:.1f}s")


def test_a_limit_changed_in_the_map_applies_without_a_reload(edge):
    edge1 = node("edge-1")
    master_before = edge1.run("systemctl show -p MainPID --value haproxy").stdout.strip()
    map_file = edge1.run("ls /etc/haproxy/maps/rate_limits.*.map").stdout.strip()
    rate = LIMITS["auth"]["rate"]
    runtime(edge1, f"set map {map_file} {LIMITS['auth']['path_prefix']} {rate * 2}")
    try:
        _fresh_window()
        with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as client:
            codes = [client.get("/auth/live").status_code for _ in range(rate * 2 + 1)]
        assert 429 not in codes[:rate * 2], codes  # the old limit would refuse request rate+1
        assert codes[rate * 2] == 429, codes
    finally:
        runtime(edge1, f"set map {map_file} {LIMITS['auth']['path_prefix']} {rate}")
    assert edge1.run("systemctl show -p MainPID --value haproxy").stdout.strip() == master_before
