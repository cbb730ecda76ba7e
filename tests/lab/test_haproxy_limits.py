"""Per-client rate limits (rate + burst per class, from the traffic policy and
rate_limits.map) and the connection flood protection, on edge-1.

The lab trusts its gateway (the traffic policy's trusted_proxies), so each
test is its own client through X-Forwarded-For, as on NGINX.
"""

from __future__ import annotations

import itertools
import random
import time

import httpx
import pytest

from haproxy_lab import runtime
from labkit import lab_policy, node, wait_until
from traffic import haproxy as haproxy_render
from traffic.model import RateLimit

POLICY = lab_policy()
_clients = itertools.count(random.randrange(0, 200))


def client() -> dict[str, str]:
    """A fresh client address (RFC 2544 benchmarking range), as nginx_lab.ClientIPs."""
    n = next(_clients) % 250
    return {"x-forwarded-for": f"198.19.{n}.9"}


# Rate + burst: what NGINX's `limit_req burst=B nodelay` means, now on HAProxy
# too (it counted exactly `rate` per 1 s window before the traffic policy):
# B + 1 requests at once pass, the next is refused until a token refills.
@pytest.mark.parametrize("cls, path", [("api", "/api/limited"), ("auth", "/auth/limited"),
                                       ("websocket", "/ws")])
def test_request_after_rate_plus_burst_gets_429(edge, cls, path):
    rate = POLICY.traffic_class(cls).rate
    who = client()
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as c:
        sent = rate.burst + 10
        started = time.monotonic()
        codes = [c.get(path, headers=who).status_code for _ in range(sent)]
        elapsed = time.monotonic() - started
        passed = sent - codes.count(429)
        assert 429 not in codes[:rate.burst + 1], codes
        # Beyond the burst only what refilled while sending gets through.
        assert rate.burst + 1 <= passed <= rate.burst + 1 + int(rate.per_second * elapsed) + 1, (codes, elapsed)
        # Another class has its own bucket: not limited by this one.
        other = "/auth/other" if cls != "auth" else "/api/other"
        assert c.get(other, headers=who).status_code != 429
        # One refill interval of the policy's rate later a token is back
        # (time is the input here, derived from the rate).
        time.sleep(1.5 / rate.per_second + 0.05)
        assert c.get(path, headers=who).status_code != 429


def test_unlisted_paths_are_not_rate_limited(edge):
    who = client()
    most = max(c.rate.per_second + c.rate.burst for c in POLICY.classes if c.rate)
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as c:
        codes = {c.get("/health", headers=who).status_code for _ in range(2 * most)}
    assert codes == {200}


def test_connection_flood_is_cut_off_and_recovers(edge, lab):
    # More new connections per period than allowed: HAProxy closes the
    # excess before reading a byte.  The flood comes from edge-2, an
    # untrusted peer: the lab gateway is a trusted proxy (many clients behind
    # one address) and exempt from this per-peer limit since the traffic policy.
    import yaml

    from labkit import ROOT
    rate = yaml.safe_load((ROOT / "roles/haproxy_lb/defaults/main.yml").read_text())["haproxy_lb_client_max_connection_rate"]
    edge2 = node(lab["edges"][1]["name"])
    url = f"http://{edge['address']}:8000/lb-health"
    script = (f"r=0; for i in $(seq 1 {rate + 20}); do curl -s -o /dev/null -m 2 -w '%{{http_code}}\\n' {url} "
              f"| grep -q '^200$' || r=$((r+1)); done; echo $r")
    refused = int(edge2.check_output(script).split()[-1])
    assert refused >= 15, refused

    def served() -> bool:
        return edge2.run(f"curl -s -o /dev/null -m 2 -w '%{{http_code}}' {url}").stdout == "200"
    took = wait_until(served, timeout=20, interval=1)
    print(f"flood over: served again after {took:.1f}s")


def test_a_limit_changed_in_the_map_applies_without_a_reload(edge):
    # The map holds each prefix's packed (interval, tolerance); the runtime API
    # changes it live (until the next converge puts the policy's back).
    edge1 = node("edge-1")
    master_before = edge1.run("systemctl show -p MainPID --value haproxy").stdout.strip()
    map_file = edge1.run("ls /etc/haproxy/maps/rate_limits.*.map").stdout.strip()
    auth = POLICY.traffic_class("auth")
    (prefix,) = auth.paths
    bigger = RateLimit(auth.rate.per_second, auth.rate.burst * 2)
    runtime(edge1, f"set map {map_file} {prefix} {haproxy_render.pack(bigger)}")
    try:
        who = client()
        with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as c:
            codes = [c.get("/auth/live", headers=who).status_code for _ in range(bigger.burst + 8)]
        # The policy's burst would refuse request burst+2; the live one allows 2 x burst + 1.
        assert 429 not in codes[:bigger.burst + 1], codes
        assert 429 in codes, codes
    finally:
        runtime(edge1, f"set map {map_file} {prefix} {haproxy_render.pack(auth.rate)}")
    assert edge1.run("systemctl show -p MainPID --value haproxy").stdout.strip() == master_before
