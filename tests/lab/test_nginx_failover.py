"""A backend dies under a steady request stream: NGINX retries and then avoids it.

Passive health only (NGINX OSS has no active checks): after `max_fails`
failed attempts the server is skipped for `fail_timeout`, then tried again
by one request.  Every failed attempt is retried on another server (retry
budget: docs/nginx.md), so no client request fails.
"""

from __future__ import annotations

import math
import time

import pytest

from lab.podman import podman
from labkit import ClientIPs, LoadGenerator, node, wait_until
from nginx_lab import DEFAULTS, access_log

pytestmark = pytest.mark.usefixtures("trusted_gateway")

VICTIM = "backend-2"


def failed_attempts(host, marker: str, dead: str, request_ids: set[str] | None = None) -> list[dict]:
    """Access-log entries of requests NGINX first sent to the dead server
    (the log lists every attempt of a request, the failed one first)."""
    return [e for e in access_log(host, marker, expect=request_ids or ())
            if (request_ids is None or e["request_id"] in request_ids)
            and e["upstream_addr"].startswith(dead) and not e["upstream_status"].startswith("200")]


def test_dead_backend_costs_no_request_and_gets_no_traffic_until_it_returns(edge, lab, ca_cert):
    victim = next(b for b in lab["backends"] if b["name"] == VICTIM)
    edge1 = node(edge["name"])
    fail_timeout = int(DEFAULTS["nginx_lb_fail_timeout"].rstrip("s"))
    dead = f"{victim['address']}:{victim['port']}"
    # One sequential client, every request its own client address and a
    # request id the access log records.  A request whose connection closes
    # unanswered is a failure here, not resent.
    load = LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), http_workers=1, websockets=0,
                         path="/api/failover", timeout=30, interval=0.05, resend_after_close=False)
    try:
        with load:
            # The victim is in the rotation before it is stopped.
            wait_until(lambda: any(o.instance == VICTIM for o in load.report.outcomes), timeout=30)
            stopping = time.time()
            podman("stop", victim["container"])  # SIGTERM: the backend drains, then exits
            stopped = time.time()
            # The outage lasts until NGINX has met the dead server: its
            # max_fails failed attempts (in the access log) put it out of
            # the rotation; requests keep succeeding on the others meanwhile.
            wait_until(lambda: len(failed_attempts(edge1, load.marker, dead)) >= DEFAULTS["nginx_lb_max_fails"],
                       timeout=30, interval=0.5)
            starting = time.time()
            podman("start", victim["container"])
            # "Returns" = reachable from the edge node again: the backend
            # listening after its start (lab containers keep a fixed MAC, so
            # the node's ARP entry stays valid).
            wait_until(lambda: edge1.run(
                f"curl -sf --max-time 1 http://{victim['address']}:{victim['port']}/health").rc == 0, timeout=75)
            reachable = time.time()
            # After fail_timeout NGINX tries the server again with one request.
            back_after = wait_until(lambda: any(o.instance == VICTIM for o in load.report.between(reachable, math.inf)),
                                    timeout=fail_timeout + 5)
            print(f"stop {stopped - stopping:.1f}s, reachable {reachable - starting:.1f}s after start, "
                  f"traffic {back_after:.1f}s after that; {load.report.requests} requests")
    finally:
        podman("start", victim["container"])  # idempotent: never leave the lab short of a backend

    outcomes = load.report.outcomes
    failed = [o for o in outcomes if o.status != "200"]
    assert failed == [], f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    during = load.report.between(stopped, starting)
    assert during and all(o.instance != VICTIM for o in during)

    # NGINX itself stopped trying: failed attempts on the dead server (the
    # access log lists them before the retry) are max_fails per window plus
    # one probe per fail_timeout, not one per request.
    outage = {o.request_id for o in load.report.between(stopped, reachable)}
    attempts = failed_attempts(edge1, load.marker, dead, outage)
    budget = DEFAULTS["nginx_lb_max_fails"] + math.ceil((reachable - stopped) / fail_timeout) + 1
    assert len(attempts) <= budget, f"{len(attempts)} attempts on the dead server in {reachable - stopped:.0f}s"
