"""Helpers for the NGINX lab tests: the role's defaults, responses, the
access log, WebSocket hellos.

The test machine reaches edge-1 through Podman's published ports, so NGINX
sees every test connection coming from the lab gateway (10.77.7.1).  The lab
inventory trusts that gateway as the proxy in front of the edge (the traffic
policy's `trusted_proxies`), which lets a test act as many distinct clients by
sending X-Forwarded-For: each test takes fresh addresses from
labkit.ClientIPs (the `ips` fixture), so the per-IP rate and connection
limits of one test never leak into another.  Shared helpers (node(),
wait_until(), the load generator) are in labkit.py, fixtures in conftest.py.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import httpx
import yaml

from labkit import tls_context, wait_until, ws_connect

# The role's defaults, for the numbers a test checks (rates, limits, ports):
# plain data, no templating needed.
DEFAULTS = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles/nginx_lb/defaults/main.yml").read_text())
ACCESS_LOG = "/var/log/nginx/access.log"
NGINX_CONF = "/etc/nginx/nginx.conf"


def instance(response: httpx.Response) -> str:
    return response.headers["x-backend-instance"]


def spread(responses: Iterable[httpx.Response]) -> Counter:
    return Counter(instance(r) for r in responses)


def ws_hello(url: str, ca_cert: str | None = None, headers: dict | None = None) -> dict:
    """Open a WebSocket (wss:// with the lab CA, or ws://), return its hello."""
    async def hello() -> dict:
        ssl_ctx = tls_context(ca_cert) if url.startswith("wss://") else None
        async with ws_connect(url, ssl=ssl_ctx, additional_headers=headers or {}, open_timeout=10,
                              close_timeout=2) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    return asyncio.run(hello())


def access_log(host, marker: str, expect: Iterable[str] = (), timeout: float = 15) -> list[dict]:
    """The access-log entries whose request id contains `marker`, read once
    every request id in `expect` is among them: NGINX writes the log with a
    flush interval, so this polls the file for those lines."""
    expected = set(expect)
    entries: list[dict] = []

    def logged() -> bool:
        out = host.check_output(f"grep -F {marker} {ACCESS_LOG} || true")
        entries[:] = [json.loads(line) for line in out.splitlines() if line.strip()]
        return expected <= {e["request_id"] for e in entries}

    wait_until(logged, timeout, interval=0.25, what=f"{len(expected)} requests of {marker} in {ACCESS_LOG}")
    return entries
