"""A backend dies under a steady request stream: NGINX retries and then avoids it.

Passive health only (NGINX OSS has no active checks): after `max_fails`
failed attempts the server is skipped for `fail_timeout`, then tried again
by one request.  Every failed attempt is retried on another server (retry
budget: docs/nginx.md), so no client request fails.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from nginx_lab import (DEFAULTS, ClientIPs, access_log, node, tls_context,
                       trusted_gateway, wait_for)  # noqa: F401 (trusted_gateway is a fixture)

pytestmark = pytest.mark.usefixtures("trusted_gateway")

VICTIM = "backend-2"


@dataclass
class Sample:
    sent: float
    request_id: str
    status: int | str
    instance: str | None


class Stream:
    """Sequential requests every 50 ms until stopped (at most 120 s)."""

    def __init__(self, base_url: str, ca_cert: str) -> None:
        self.samples: list[Sample] = []
        self.marker = f"nginx-failover-{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(base_url, ca_cert), daemon=True)

    def _run(self, base_url: str, ca_cert: str) -> None:
        ips = ClientIPs()
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=base_url, verify=tls_context(ca_cert), timeout=30) as client:
            for n in range(10_000):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                rid, sent = f"{self.marker}-{n:05d}", time.monotonic()
                try:
                    r = client.get("/api/failover", headers={"x-request-id": rid, "x-forwarded-for": ips.take()})
                    self.samples.append(Sample(sent, rid, r.status_code, r.headers.get("x-backend-instance")))
                except httpx.HTTPError as exc:
                    self.samples.append(Sample(sent, rid, type(exc).__name__, None))
                time.sleep(0.05)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.sent < end]

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=40)


def podman(*args: str) -> None:
    subprocess.run(["podman", *args], check=True, capture_output=True, timeout=60)


def test_dead_backend_costs_no_request_and_gets_no_traffic_until_it_returns(edge, lab, ca_cert):
    victim = next(b for b in lab["backends"] if b["name"] == VICTIM)
    edge1 = node(edge["name"])
    fail_timeout = int(DEFAULTS["nginx_lb_fail_timeout"].rstrip("s"))
    try:
        with Stream(edge["endpoints"]["nginx_https"], ca_cert) as stream:
            time.sleep(2)
            stopping = time.monotonic()
            podman("stop", victim["container"])  # SIGTERM: the backend drains, then exits
            stopped = time.monotonic()
            time.sleep(5)
            starting = time.monotonic()
            podman("start", victim["container"])
            # "Returns" = reachable from the edge node again: the backend
            # listening after its start (lab containers keep a fixed MAC, so
            # the node's ARP entry stays valid).
            wait_for(lambda: edge1.run(
                f"curl -sf --max-time 1 http://{victim['address']}:{victim['port']}/health").rc == 0, timeout=75)
            reachable = time.monotonic()
            # After fail_timeout NGINX tries the server again with one request.
            wait_for(lambda: any(s.instance == VICTIM for s in stream.between(reachable, math.inf)),
                               timeout=fail_timeout + 5)
            back = time.monotonic()
            print(f"stop {stopped - stopping:.1f}s, reachable {reachable - starting:.1f}s after start, "
                  f"traffic {back - reachable:.1f}s after that; {len(stream.samples)} requests")
    finally:
        podman("start", victim["container"])  # idempotent: never leave the lab short of a backend

    failed = [s for s in stream.samples if s.status != 200]
    assert failed == [], f"{len(failed)} of {len(stream.samples)} requests failed: {failed[:5]}"
    during = stream.between(stopped, starting)
    assert during and all(s.instance != VICTIM for s in during)
    assert back - reachable <= fail_timeout + 5

    # NGINX itself stopped trying: failed attempts on the dead server (the
    # access log lists them before the retry) are max_fails per window plus
    # one probe per fail_timeout, not one per request.
    time.sleep(1.5)  # the access log is flushed every second
    dead = f"{victim['address']}:{victim['port']}"
    outage = {s.request_id for s in stream.between(stopped, reachable)}
    attempts = [e for e in access_log(edge1, stream.marker)
                if e["request_id"] in outage and e["upstream_addr"].startswith(dead)
                and not e["upstream_status"].startswith("200")]
    budget = DEFAULTS["nginx_lb_max_fails"] + math.ceil((reachable - stopped) / fail_timeout) + 1
    assert len(attempts) <= budget, f"{len(attempts)} attempts on the dead server in {reachable - stopped:.0f}s"
