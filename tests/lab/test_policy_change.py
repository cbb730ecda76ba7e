"""One edit of the traffic policy, converged: it reaches both load balancers
of edge-1, hitlessly (reloads under load, zero failed requests), and the
inventory's own policy is put back afterwards."""

from __future__ import annotations

import time

import httpx
import pytest

from haproxy_lab import haproxy_load, wait_for_new_worker_traffic, worker_traffic
from labkit import ClientIPs, LoadGenerator, lab_policy, lab_policy_overrides, node, tls_context
from traffic.model import deep_merge

EDGE1 = "edge-1"
# The edit: the api class's bucket, rate 10 -> 20 and burst 20 -> 40.
EDIT = {"classes": {"api": {"rate": {"per_second": 20, "burst": 40}}}}


@pytest.fixture(scope="module")
def changed(converge, edge, ca_cert):
    host = node(EDGE1)
    pids = tuple(host.run(f"systemctl show -p MainPID --value {service}").stdout for service in ("nginx", "haproxy"))
    haproxy_worker = worker_traffic(host)[0]
    with LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), websockets=2, max_seconds=150) as nginx_load, \
            haproxy_load(edge["endpoints"]["haproxy_http"], ca_cert) as haproxy:
        for load in (nginx_load, haproxy):
            load.wait_for_answers(50)
        result = converge({"traffic_policy_overrides": deep_merge(lab_policy_overrides(), EDIT)}, limit=EDGE1)
        if result.rc == 0:
            # Traffic on the new workers too: NGINX closes the old workers'
            # idle keep-alive connections, so what the load sends from now on
            # reaches the new ones; HAProxy's new worker counts its own.
            nginx_load.wait_for_answers(50, since=time.time())
            wait_for_new_worker_traffic(host, haproxy_worker)
    yield result, nginx_load.report, haproxy.report, pids
    restored = converge(limit=EDGE1)
    assert restored.rc == 0, restored.output[-3000:]


def test_the_change_converges_by_reloads(changed):
    result, _, _, (nginx_pid, haproxy_pid) = changed
    assert result.rc == 0, result.output[-3000:]
    assert {"nginx_lb : Reload nginx", "haproxy_lb : Reload haproxy"} <= set(result.handlers), result.handlers
    host = node(EDGE1)
    # Reloaded, not restarted: the masters are the same processes.
    assert host.run("systemctl show -p MainPID --value nginx").stdout == nginx_pid
    assert host.run("systemctl show -p MainPID --value haproxy").stdout == haproxy_pid


def test_no_request_failed_on_either_load_balancer(changed):
    _, nginx_report, haproxy_report, _ = changed
    assert nginx_report.requests > 50 and nginx_report.failures == [], nginx_report.failures[:5]
    assert nginx_report.ws_failures == []
    assert haproxy_report.requests > 50 and haproxy_report.failures == [], haproxy_report.failures[:5]


@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
def test_both_load_balancers_enforce_the_new_burst(changed, edge, ca_cert, lb):
    rate = lab_policy(EDIT).traffic_class("api").rate
    url = edge["endpoints"]["nginx_https" if lb == "nginx" else "haproxy_http"]
    who = {"x-forwarded-for": ClientIPs().take().replace(".7", ".77")}
    with httpx.Client(base_url=url, verify=tls_context(ca_cert), timeout=10) as c:
        codes = [c.get("/api/new-burst", headers=who).status_code for _ in range(rate.burst + 10)]
    # The old burst (20) would refuse request 22; the new one serves 41 at once.
    assert 429 not in codes[:rate.burst + 1], codes
    assert 429 in codes, codes
