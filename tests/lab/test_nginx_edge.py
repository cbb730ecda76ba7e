"""NGINX at the edge: TLS, security headers, redirects, rate and connection limits."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx
import pytest

from labkit import lab_policy, tls_context

pytestmark = pytest.mark.usefixtures("trusted_gateway")
# The traffic policy the lab runs (traffic/policy.yml + the lab's overrides).
POLICY = lab_policy()



def handshake(edge, ca_cert, version: ssl.TLSVersion, alpn: list[str] | None = None) -> ssl.SSLSocket:
    """A bare TLS handshake offering exactly one protocol version."""
    url = urlsplit(edge["endpoints"]["nginx_https"])
    ctx = tls_context(ca_cert)
    # Let the client offer old versions at all (OpenSSL 3 refuses them at
    # its default security level), so a refusal can only come from NGINX.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection((url.hostname, url.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=url.hostname)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"])
def test_old_tls_versions_are_refused(edge, ca_cert, version):
    with pytest.raises(ssl.SSLError) as refused:
        handshake(edge, ca_cert, version)
    assert "PROTOCOL_VERSION" in str(refused.value).upper()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"])
def test_tls_12_and_13_negotiate_http2(edge, ca_cert, version):
    with handshake(edge, ca_cert, version, alpn=["h2", "http/1.1"]) as tls:
        assert tls.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
        assert tls.selected_alpn_protocol() == "h2"
        cipher = tls.cipher()[0]
        if version is ssl.TLSVersion.TLSv1_2:
            assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher


def test_security_headers_on_success_and_error_responses(https, ips):
    ok = https.get("/api/headers", headers={"x-forwarded-for": ips.take()})
    missing = https.get("/no-such-route")
    for r in (ok, missing):
        assert r.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
        assert r.headers["x-frame-options"] == "SAMEORIGIN"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == POLICY.headers.referrer_policy
        assert r.headers["content-security-policy"] == POLICY.headers.content_security_policy
        assert r.headers["server"] == "nginx"  # no version
    assert (ok.status_code, missing.status_code) == (200, 404)


def test_http_redirects_to_https_except_health(edge):
    http = edge["endpoints"]["nginx_http"]
    r = httpx.get(f"{http}/api/x?a=1", follow_redirects=False)
    assert r.status_code == 301
    # Same host, default HTTPS port, path and query kept.
    assert r.headers["location"] == f"https://{urlsplit(http).hostname}/api/x?a=1"
    health = httpx.get(f"{http}/health")
    assert health.status_code == 200 and health.json()["status"] == "healthy"


@pytest.mark.parametrize(("path", "cls"), [("/api/rate", "api"), ("/auth/rate", "auth"), ("/ws", "websocket")])
def test_requests_beyond_rate_plus_burst_get_429(https, ips, path, cls):
    rate, burst = POLICY.traffic_class(cls).rate.per_second, POLICY.traffic_class(cls).rate.burst
    client = {"x-forwarded-for": ips.take()}
    sent = burst + 15
    started = time.monotonic()
    statuses = [https.get(path, headers=client).status_code for _ in range(sent)]
    elapsed = time.monotonic() - started
    counts = Counter(statuses)
    passed = sent - counts[429]
    # nodelay: the burst is served at once; beyond it only what the rate
    # refilled while the requests were being sent gets through.
    assert burst + 1 <= passed <= burst + 1 + int(rate * elapsed) + 1, (counts, elapsed)
    assert counts[429] > 0
    assert statuses[: burst + 1].count(429) == 0


def test_connection_limit_rejects_extra_concurrent_requests(edge, ca_cert, ips):
    limit = POLICY.client.connections_per_client
    extra = 10
    client = {"x-forwarded-for": ips.take()}

    async def flood() -> Counter:
        limits = httpx.Limits(max_connections=limit + extra)
        async with httpx.AsyncClient(base_url=edge["endpoints"]["nginx_https"], verify=tls_context(ca_cert),
                                     limits=limits, timeout=30) as client_:
            # /ai/ has no rate limit, and each call stays in flight for 5 s:
            # long enough for all of them to be open at the same time.
            calls = [client_.get("/ai/hold", params={"seconds": 5}, headers=client) for _ in range(limit + extra)]
            return Counter(r.status_code for r in await asyncio.gather(*calls))

    counts = asyncio.run(flood())
    assert counts == {200: limit, 429: extra}
